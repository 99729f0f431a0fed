"""A quiet one-job DAG (docs/redis-layout.md): its plain run writes no event stream, and
whatever else happens to it first writes the events so far, with the ids a watcher was
already shown. Each case reads the events while the DAG is quiet, then makes the
transition, and checks that the history is kept (same ids, same order), nothing is
shown twice and the ids only grow."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.jobs import ClaimedJob
from pipeline.keys import Keys
from pipeline.model import Backoff, BackoffKind, Dag
from pipeline.registry import Registry, stage


@pytest.fixture(autouse=True)
def _noop(registry: Registry) -> None:
    @stage("noop", registry=registry)
    def noop(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        return 1


def _history(client: Client, dag_id: str, after: str = "0") -> list[tuple[str, str]]:
    return [(e.id, e.type) for e in client.events(dag_id, after=after)]


def _key(eid: str) -> tuple[int, int]:
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq)


def _check(history: list[tuple[str, str]], shown: list[tuple[str, str]], types: list[str]) -> None:
    assert [t for _, t in history] == types
    assert history[: len(shown)] == shown, "what a watcher was shown changed"
    ids = [_key(i) for i, _ in history]
    assert ids == sorted(set(ids)), "ids repeat or go backwards"


def _one_job(client: Client) -> Dag:
    dag = Dag()
    dag.add("only", "noop", attempts=3, backoff=Backoff(BackoffKind.FIXED, 0.05, jitter=0))
    client.submit(dag)
    return dag


def _claim(broker: Broker) -> ClaimedJob:
    jobs, _ = broker.claim(["default"])
    assert len(jobs) == 1
    return jobs[0]


def test_a_plain_run_writes_no_stream_and_replays_all_its_events(
    r: redis.Redis, namespace: str, client: Client, broker: Broker
) -> None:
    keys = Keys(namespace)
    dag = _one_job(client)
    job = _claim(broker)
    assert r.exists(keys.dag_events(dag.id)) == 0
    running = list(client.events(dag.id))
    assert [e.type for e in running] == ["submitted", "active"]
    assert running[1].fields == {"worker": broker.worker_id, "attempt": "1"}
    assert running[1].job == job.id
    assert abs(running[1].timestamp_ms - time.time() * 1000) < 5000
    accepted, _ = broker.complete(job, {"ok": True})
    assert accepted
    assert r.exists(keys.dag_events(dag.id)) == 0
    history = _history(client, dag.id)
    _check(
        history,
        [(e.id, e.type) for e in running],
        ["submitted", "active", "completed", "dag_completed"],
    )
    # A watcher resuming after any event gets exactly the rest.
    for i, (eid, _) in enumerate(history):
        assert _history(client, dag.id, after=eid) == history[i + 1 :]
    # Following writes the stream (to block on) with the same ids.
    followed = [(e.id, e.type) for e in client.events(dag.id, follow=True, block=0.1)]
    assert followed == history
    assert r.xlen(keys.dag_events(dag.id)) == 3
    assert _history(client, dag.id) == history


def test_a_follower_of_a_waiting_dag_sees_the_run_as_it_happens(
    r: redis.Redis, namespace: str, client: Client, broker: Broker
) -> None:
    dag = _one_job(client)
    follower = client.events(dag.id, follow=True, block=0.1)
    assert next(follower).type == "submitted"
    # The follower's first read ended the quiet: the claim and completion write events.
    job = _claim(broker)
    assert next(follower).type == "active"
    broker.complete(job, 1)
    assert [e.type for e in follower] == ["completed", "dag_completed"]
    assert r.exists(Keys(namespace).dag_events(dag.id)) == 1


def test_progress_writes_the_history_first(client: Client, broker: Broker) -> None:
    dag = _one_job(client)
    job = _claim(broker)
    shown = _history(client, dag.id)
    assert broker.progress(job, 50.0, "half")
    broker.complete(job, 1)
    _check(
        _history(client, dag.id),
        shown,
        ["submitted", "active", "progress", "completed", "dag_completed"],
    )


def test_a_failure_and_its_retry(client: Client, broker: Broker) -> None:
    dag = _one_job(client)
    job = _claim(broker)
    shown = _history(client, dag.id)
    assert broker.fail_with(job, "OSError", "flaky", permanent=False) == "retry"
    deadline = time.monotonic() + 10
    jobs: list[ClaimedJob] = []
    while not jobs and time.monotonic() < deadline:
        jobs, _ = broker.claim(["default"])
        time.sleep(0.05)
    (again,) = jobs
    assert again.attempt == 2
    broker.complete(again, 1)
    history = _history(client, dag.id)
    _check(
        history,
        shown,
        ["submitted", "active", "failed", "retried", "active", "completed", "dag_completed"],
    )
    assert [e.fields.get("attempt") for e in client.events(dag.id) if e.type == "active"] == [
        "1",
        "2",
    ]


def test_a_dead_job(client: Client, broker: Broker) -> None:
    dag = _one_job(client)
    job = _claim(broker)
    shown = _history(client, dag.id)
    assert broker.fail_with(job, "ValueError", "bad input", permanent=True) == "dead"
    _check(_history(client, dag.id), shown, ["submitted", "active", "dead", "dag_failed"])


def test_a_stalled_lease(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    short = Broker(r, namespace=namespace, registry=registry, lease=0.2)
    dag = _one_job(client)
    _claim(short)
    shown = _history(client, dag.id)
    time.sleep(0.4)
    assert short.reclaim_stalled(["default"]) == [dag.job_id("only")]
    again = _claim(short)
    short.complete(again, 1)
    _check(
        _history(client, dag.id),
        shown,
        ["submitted", "active", "stalled", "active", "completed", "dag_completed"],
    )


def test_a_release(client: Client, broker: Broker) -> None:
    dag = _one_job(client)
    job = _claim(broker)
    shown = _history(client, dag.id)
    assert broker.release([job]) == 1
    again = _claim(broker)
    assert again.attempt == 1  # a release spends no attempt
    broker.complete(again, 1)
    _check(
        _history(client, dag.id),
        shown,
        ["submitted", "active", "released", "active", "completed", "dag_completed"],
    )


def test_a_cancel_while_waiting_and_while_running(client: Client, broker: Broker) -> None:
    waiting = _one_job(client)
    shown = _history(client, waiting.id)
    assert client.cancel(waiting.id) == (1, 0)
    _check(_history(client, waiting.id), shown, ["submitted", "dag_cancelled", "cancelled"])

    running = _one_job(client)
    job = _claim(broker)
    assert job.dag_id == running.id
    shown = _history(client, running.id)
    assert client.cancel(running.id) == (0, 1)
    assert broker.fail_with(job, "JobStopped", "cancelled", permanent=False) == "cancelled"
    history = _history(client, running.id)
    _check(history, shown, [t for _, t in history])
    types = [t for _, t in history]
    assert types[:3] == ["submitted", "active", "cancelled"] and types[-1] == "dag_cancelled"
    assert types.count("dag_cancelled") == 1


def test_children_end_the_quiet(client: Client, broker: Broker) -> None:
    dag = _one_job(client)
    job = _claim(broker)
    shown = _history(client, dag.id)
    sub = Dag(dag.id)
    sub.add("child", "noop")
    assert broker.add_children(job, sub) == 1
    broker.complete(job, 1)
    (child,) = broker.claim(["default"])[0]
    broker.complete(child, 1)
    history = _history(client, dag.id)
    types = [t for _, t in history]
    _check(history, shown, types)
    assert types[:3] == ["submitted", "active", "submitted"]
    assert types.count("completed") == 2 and types[-1] == "dag_completed"


def test_a_dag_of_two_jobs_is_never_quiet(
    r: redis.Redis, namespace: str, client: Client, broker: Broker
) -> None:
    dag = Dag()
    dag.add("a", "noop")
    dag.add("b", "noop", after=["a"])
    client.submit(dag)
    _claim(broker)
    assert r.exists(Keys(namespace).dag_events(dag.id)) == 1
