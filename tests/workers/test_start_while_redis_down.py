"""A worker started while Redis is down waits for it, and gives up only when told to."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from pipeline.server import EmbeddedServer
from tests.workers.conftest import Workers, wait_for


@pytest.fixture
def down_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(tmp_path / "home")  # not started yet
    yield server
    server.stop()


def test_a_worker_started_before_redis_waits_then_works(
    down_server: EmbeddedServer, workers: Workers, namespace: str
) -> None:
    w = workers.spawn("--concurrency", "1", url=down_server.url, ready=False)
    wait_for(lambda: "Redis unreachable" in workers.log(w), 30, "the notice")
    time.sleep(1.5)
    assert w.poll() is None, workers.log(w)
    down_server.ensure_running()
    client = Client(down_server.client(), namespace=namespace, registry=REGISTRY)
    dag = Dag()
    dag.add("first", "t.echo", {"x": 1})
    client.submit(dag)
    wait_for(lambda: client.dag_state(dag.id) == "completed", 30, "the DAG to complete")
    log = workers.log(w)
    assert log.count("Redis unreachable") == 1, log
    assert "Traceback" not in log


def test_a_worker_gives_up_after_the_configured_time(
    down_server: EmbeddedServer,
    workers: Workers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEDIAPIPE_REDIS_GIVE_UP", "1.5")
    started = time.monotonic()
    w = workers.spawn("--concurrency", "1", url=down_server.url, ready=False)
    assert w.wait(30) == 3, workers.log(w)
    assert time.monotonic() - started >= 1.5
    log = workers.log(w)
    lines = [line for line in log.splitlines() if line.strip()]
    assert "Traceback" not in log
    assert len(lines) == 2, log  # the notice, then the give-up line
    assert "giving up" in lines[-1]
