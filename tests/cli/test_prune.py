"""`mediapipe prune`: retention on demand, for operators."""

from __future__ import annotations

import time
from typing import Any

import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import PermanentError
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.registry import Registry, stage
from tests.cli.conftest import Cli
from tests.helpers import run_dag


def _finished_dags(client: Client, broker: Broker, registry: Registry) -> tuple[list[Dag], Dag]:
    @stage("step", registry=registry)
    def step(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        return None

    @stage("boom", registry=registry, attempts=1)
    def boom(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        raise PermanentError("broken input")

    done = []
    for _ in range(3):
        d = Dag()
        d.add("a", "step")
        d.add("b", "step", after=["a"])
        client.submit(d)
        assert run_dag(client, broker, d.id) == "completed"
        done.append(d)
        time.sleep(0.002)  # finish times a millisecond apart: ties order by id
    failed = Dag()
    failed.add("a", "boom")
    failed.add("b", "boom")
    client.submit(failed)
    assert run_dag(client, broker, failed.id) == "failed"
    return done, failed


def test_prune_deletes_by_count_then_by_age_and_says_what_it_deleted(
    fleet_cli: Cli,
    namespace: str,
    client: Client,
    broker: Broker,
    registry: Registry,
    r: redis.Redis,
) -> None:
    done, failed = _finished_dags(client, broker, registry)

    res = fleet_cli.run(
        "--namespace", namespace, "prune", "--completed-count", "1", "--dead-count", "1"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "pruned 2 DAGs (4 jobs), 1 dead-letter entries, 0 events"
    assert [client.dag(d.id) is None for d in done] == [True, True, False]
    assert r.zcard(Keys(namespace).dead) == 1

    res = fleet_cli.run(
        "--namespace", namespace, "prune", "--completed-age", "0", "--failed-age", "0s"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("pruned 2 DAGs (4 jobs), 0 dead-letter entries")
    assert client.dag(done[2].id) is None and client.dag(failed.id) is None
    assert [k for k in r.scan_iter(match=Keys(namespace).pattern()) if b":job:" in k] == []

    res = fleet_cli.run("--namespace", namespace, "prune", "--failed-age", "soon")
    assert res.returncode == 2 and "--failed-age" in res.stderr
