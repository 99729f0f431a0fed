"""Leases: a job whose worker stops renewing is reclaimed once; a late completion is discarded."""

from __future__ import annotations

import time
from typing import Any

import redis

from pipeline.broker import Broker, LeaseStatus
from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import Registry, stage


def _one_job(client: Client, registry: Registry, max_stalls: int = 1) -> Dag:
    @stage("work", registry=registry, max_stalls=max_stalls)
    def work(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
        return "done"

    dag = Dag()
    dag.add("w", "work")
    client.submit(dag)
    return dag


def test_expired_lease_is_reclaimed_exactly_once_and_the_old_owner_is_discarded(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    dag = _one_job(client, registry)
    old = Broker(r, namespace=namespace, registry=registry, lease=0.3)
    new = Broker(r, namespace=namespace, registry=registry, lease=5.0)
    (job,), _ = old.claim(["default"])
    assert new.reclaim_stalled(["default"]) == []  # lease still valid
    time.sleep(0.4)
    assert new.reclaim_stalled(["default"]) == [job.id]
    assert new.reclaim_stalled(["default"]) == []  # exactly once

    (again,), _ = new.claim(["default"])
    assert again.id == job.id and again.attempt == 2 and again.token != job.token
    # the old owner learns it lost it
    assert old.extend({job.id: job.token}) == {job.id: LeaseStatus.LOST}
    assert new.complete(again, "new owner")[0] is True
    assert old.complete(job, "old owner")[0] is False

    j = client.job(job.id)
    assert j is not None and j["result"] == "new owner" and j["stalls"] == 1
    info = client.dag(dag.id)
    assert info is not None and info["completed"] == 1 and info["state"] == "completed"
    events = [e.type for e in client.events(dag.id)]
    assert events.count("stalled") == 1 and events.count("completed") == 1


def test_extending_a_lease_keeps_the_job(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    _one_job(client, registry)
    b = Broker(r, namespace=namespace, registry=registry, lease=0.3)
    (job,), _ = b.claim(["default"])
    for _ in range(5):
        time.sleep(0.1)
        assert b.extend({job.id: job.token}) == {job.id: LeaseStatus.OK}
    assert b.reclaim_stalled(["default"]) == []
    assert b.complete(job, 1)[0] is True


def test_too_many_stalls_send_the_job_to_the_dead_letter_queue(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    dag = _one_job(client, registry, max_stalls=1)
    b = Broker(r, namespace=namespace, registry=registry, lease=0.1)
    for expected in ("waiting", "dead"):
        (job,), _ = b.claim(["default"])
        time.sleep(0.15)
        assert b.reclaim_stalled(["default"]) == [job.id]
        assert client.job(job.id)["state"] == expected  # type: ignore[index]
    assert client.dag_state(dag.id) == "failed"
    assert client.dead()[0]["error"]["type"] == "StalledError"


def test_released_jobs_return_at_once_without_spending_an_attempt(
    r: redis.Redis, namespace: str, client: Client, registry: Registry, broker: Broker
) -> None:
    _one_job(client, registry)
    (job,), _ = broker.claim(["default"])
    assert broker.release([job]) == 1
    (again,), _ = broker.claim(["default"])
    assert again.id == job.id and again.attempt == 1


def test_a_stall_spends_an_attempt_and_the_job_dies_only_when_attempts_run_out(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    @stage("work3", registry=registry, attempts=3)
    def work3(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
        return "done"

    dag = Dag()
    dag.add("w", "work3")
    client.submit(dag)
    b = Broker(r, namespace=namespace, registry=registry, lease=0.1)
    for attempt, expected in ((1, "waiting"), (2, "waiting"), (3, "dead")):
        (job,), _ = b.claim(["default"])
        assert job.attempt == attempt
        time.sleep(0.15)
        assert b.reclaim_stalled(["default"]) == [job.id]
        assert client.job(job.id)["state"] == expected  # type: ignore[index]
    err = client.dead()[0]["error"]
    assert err["type"] == "StalledError" and "attempt 3 of 3" in err["message"]
