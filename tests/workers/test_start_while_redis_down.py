"""A worker started while Redis is down waits for it, and gives up only when told to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from pipeline.server import EmbeddedServer
from tests.workers.conftest import ROOT, Workers, wait_for
from workers.node import NodeConfig, WorkerNode


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


def test_a_fleet_submit_that_waits_rides_out_redis_being_down_at_its_start(
    down_server: EmbeddedServer, workers: Workers, namespace: str, tmp_path: Path
) -> None:
    """``submit --wait`` started mid-failover (the master gone, or not up yet) waits for
    Redis like a worker does, then submits once and follows the DAG to its end."""
    photo = Path(__file__).resolve().parents[2] / "fixtures" / "cmyk.jpg"
    out = tmp_path / "out"
    submit = subprocess.Popen(
        [sys.executable, "-m", "mediajobs", "--redis", down_server.url, "--namespace",
         namespace, "submit", str(photo), "--out", str(out), "--wait", "--json"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    w = workers.spawn("--concurrency", "1", url=down_server.url, ready=False)
    # Both met Redis down (a fixed sleep raced a slow start on a loaded machine: the
    # submit then found Redis up and said nothing).
    assert submit.stderr is not None
    first = submit.stderr.readline()
    assert "Redis unreachable" in first, first
    wait_for(lambda: "Redis unreachable" in workers.log(w), 60, "the worker's notice")
    time.sleep(0.5)
    assert submit.poll() is None
    down_server.ensure_running()
    stdout, rest = submit.communicate(timeout=90)
    stderr = first + rest
    assert submit.returncode == 0, stderr
    doc = json.loads(stdout)  # one input: its document alone
    assert doc["status"] == "completed", doc
    assert Path(doc["manifest"]).is_file()
    assert stderr.count("Redis unreachable") == 1 and "Redis is back" in stderr, stderr


def test_a_node_whose_redis_goes_away_while_it_starts_waits_for_it(
    tmp_path: Path, namespace: str
) -> None:
    """Redis answers the node's first calls, then restarts before the node has made its
    scheduler's client (which loads the transitions): the node waits, then works. Seen in
    a fault soak: a worker started during a Redis restart exited with "Redis
    unreachable" (exit 3); the scheduler's client was made outside the retry."""
    server = EmbeddedServer(tmp_path / "home")
    server.ensure_running()
    node = WorkerNode(
        server.url,
        config=NodeConfig(
            namespace=namespace,
            concurrency=1,
            adaptive=False,
            start_method="forkserver",
            preload=("tests.workers.sample_stages",),
        ),
        scheduler=lambda client, stop: stop.wait(),
    )
    server.stop()  # after the node's first calls, before run() makes the scheduler's client
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(node.run(install_signals=False)))
    t.start()
    try:
        time.sleep(2.0)
        assert t.is_alive() and not codes, f"the node ended with {codes} while Redis was away"
        server.ensure_running()
        client = Client(server.client(), namespace=namespace, registry=REGISTRY)
        dag = Dag()
        dag.add("first", "t.echo", {"x": 1})
        client.submit(dag)
        wait_for(lambda: client.dag_state(dag.id) == "completed", 60, "the DAG to complete")
    finally:
        node.request_stop()
        t.join(60)
        server.stop()
    assert codes == [0]
