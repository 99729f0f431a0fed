"""Retention: finished DAGs, idempotency keys, event streams and the dead-letter queue
are deleted in bounded steps, so a namespace's keys return to a baseline."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import PermanentError, SubmissionError
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.registry import Registry, stage
from pipeline.replies import as_str
from pipeline.retention import Retention
from tests.helpers import run_dag


def _stages(registry: Registry) -> None:
    @stage("step", registry=registry)
    def step(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
        return str(ctx.job.name)

    @stage("boom", registry=registry, attempts=1)
    def boom(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        raise PermanentError("broken input")


def _keys_of(r: redis.Redis, namespace: str, dag_id: str) -> list[str]:
    return [
        k.decode()
        for k in r.scan_iter(match=Keys(namespace).pattern(), count=1000)
        if dag_id in k.decode()
    ]


def _failed_dag(client: Client, broker: Broker, jobs: int) -> Dag:
    dag = Dag()
    for i in range(jobs):
        dag.add(f"j{i}", "boom")
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "failed"
    return dag


def test_retry_dead_refuses_a_dag_that_a_budgeted_prune_has_started_deleting(
    r: redis.Redis, namespace: str, client: Client, broker: Broker, registry: Registry
) -> None:
    _stages(registry)
    keys = Keys(namespace)
    dag = _failed_dag(client, broker, 12)
    retention = Retention(failed_age=0.0, budget=5)

    first = client.prune(retention, max_steps=1)
    assert (first.dags, first.jobs, first.more) == (0, 5, True)
    left = [as_str(i) for i in r.zrange(keys.dead, 0, -1)]
    assert len(left) == 7
    with pytest.raises(SubmissionError, match="being deleted"):
        client.retry_dead(left[0])
    assert client.dag_state(dag.id) == "failed"
    assert r.zscore(keys.dags_failed, dag.id) is not None  # the next step finds it again

    rest = client.prune(retention)
    assert (rest.dags, rest.jobs, rest.more) == (1, 7, False)
    assert _keys_of(r, namespace, dag.id) == []
    assert r.exists(keys.dead, keys.dags_failed) == 0


def test_prune_leaves_no_key_of_a_finished_dag(
    r: redis.Redis, namespace: str, client: Client, broker: Broker, registry: Registry
) -> None:
    _stages(registry)
    dag = Dag(idempotency_key="photo-1")
    dag.add("a", "step")
    dag.add("b", "step", after=["a"])
    dag.add("c", "step", after=["a", "b"])
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "completed"
    # the DAG, its job set and events, 3 jobs, 2 result hashes (schema 1 had 13)
    assert len(_keys_of(r, namespace, dag.id)) >= 8

    done = client.prune(Retention(completed_age=0.0))
    assert (done.dags, done.jobs) == (1, 3)
    assert _keys_of(r, namespace, dag.id) == []
    assert r.exists(Keys(namespace).idempotency("photo-1")) == 0
    assert client.prune(Retention(completed_age=0.0)).dags == 0  # nothing left: a no-op


def test_a_cancelled_dag_does_not_pin_its_idempotency_key(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    _stages(registry)
    first = Dag(idempotency_key="upload-7")
    first.add("a", "step")
    assert client.submit(first).created
    again = Dag(idempotency_key="upload-7")
    again.add("a", "step")
    assert client.submit(again).dag_id == first.id  # pinned while it runs

    client.cancel(first.id)
    second = client.submit(again)
    assert second.created and second.dag_id == again.id
    # Pruning the cancelled DAG leaves the key that now names the new one.
    assert client.prune(Retention(failed_age=0.0)).dags == 1
    assert r.get(Keys(namespace).idempotency("upload-7")) == again.id.encode()


def test_an_idempotency_key_expires_once_its_dag_has_finished(
    r: redis.Redis, namespace: str, client: Client, broker: Broker, registry: Registry
) -> None:
    _stages(registry)
    key = Keys(namespace).idempotency("clip-3")
    client.prune(Retention(idempotency_age=60.0))  # the window every node publishes
    dag = Dag(idempotency_key="clip-3")
    dag.add("a", "step")
    client.submit(dag)
    assert r.pttl(key) == -1  # no expiry while the DAG runs
    assert run_dag(client, broker, dag.id) == "completed"
    assert 50_000 < r.pttl(key) <= 60_000


def test_the_dead_letter_queue_is_trimmed_by_count_and_by_age(
    r: redis.Redis, namespace: str, client: Client, broker: Broker, registry: Registry
) -> None:
    _stages(registry)
    keys = Keys(namespace)
    dag = _failed_dag(client, broker, 6)
    oldest = [as_str(i) for i in r.zrange(keys.dead, 0, -1)]

    by_count = client.prune(Retention(dead_count=4))
    assert (by_count.dead, by_count.dags) == (2, 0)
    assert [as_str(i) for i in r.zrange(keys.dead, 0, -1)] == oldest[2:]
    # The jobs stay with their DAG (still inspectable) until the DAG itself goes.
    assert client.job(oldest[0]) is not None

    time.sleep(0.01)
    assert client.prune(Retention(dead_age=0.0)).dead == 4
    assert r.exists(keys.dead) == 0
    assert client.dag_state(dag.id) == "failed"


def test_a_dag_event_stream_is_capped_and_keeps_its_final_event(
    r: redis.Redis, namespace: str, client: Client, broker: Broker, registry: Registry
) -> None:
    _stages(registry)
    dag = Dag()
    dag.add("a", "step")
    client.submit(dag)
    (job,), _ = broker.claim(["default"])
    for i in range(12_000):
        broker.progress(job, i % 100)
    broker.complete(job, None)
    stream = Keys(namespace).dag_events(dag.id)
    assert r.xlen(stream) <= 10_100
    events = list(client.events(dag.id))
    assert events[0].type == "progress"  # the oldest were trimmed ...
    assert [e.type for e in events[-2:]] == ["completed", "dag_completed"]  # ... not the end


def test_the_fleet_event_stream_is_trimmed_by_age(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    _stages(registry)
    for _ in range(3):
        d = Dag()
        d.add("a", "step")
        client.submit(d)
    events = Keys(namespace).events
    assert r.xlen(events) == 3
    time.sleep(0.01)
    client.prune(Retention(events_age=0.0))
    assert r.xlen(events) == 0


def test_retention_settings_come_from_the_environment() -> None:
    r = Retention.from_env(
        {
            "MEDIAPIPE_RETENTION_COMPLETED_AGE": "2h",
            "MEDIAPIPE_RETENTION_COMPLETED_COUNT": "50",
            "MEDIAPIPE_RETENTION_FAILED_AGE": "3d",
            "MEDIAPIPE_RETENTION_DEAD_COUNT": "7",
            "MEDIAPIPE_RETENTION_IDEMPOTENCY_AGE": "90s",
            "MEDIAPIPE_RETENTION_INTERVAL": "0.5",
        }
    )
    assert r is not None
    assert (r.completed_age, r.completed_count, r.failed_age) == (7200.0, 50, 3 * 86400.0)
    assert (r.dead_count, r.idempotency_age, r.interval) == (7, 90.0, 0.5)
    assert r.dead_age == Retention().dead_age
    assert Retention.from_env({"MEDIAPIPE_RETENTION": "off"}) is None
    with pytest.raises(ValueError, match="MEDIAPIPE_RETENTION_DEAD_AGE"):
        Retention.from_env({"MEDIAPIPE_RETENTION_DEAD_AGE": "soon"})
