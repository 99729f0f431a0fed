"""Which job a claim hands out: priority, FIFO, delays, paused queues, rate limits."""

from __future__ import annotations

import time
from typing import Any

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import Registry, stage


def _noop(registry: Registry, queue: str = "default") -> None:
    @stage("noop", registry=registry, queue=queue)
    def noop(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        return None


def _submit(client: Client, name: str, **options: Any) -> str:
    dag = Dag()
    dag.add(name, "noop", options=None, **options)
    client.submit(dag)
    return dag.job_id(name)


def test_higher_priority_first_then_first_in_first_out(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _noop(registry)
    order = [("low1", -5), ("mid1", 0), ("high1", 10), ("low2", -5), ("mid2", 0), ("high2", 10)]
    ids = {name: _submit(client, name, priority=p) for name, p in order}
    served: list[str] = []
    while True:
        jobs, _ = broker.claim(["default"])
        if not jobs:
            break
        served.append(jobs[0].name)
    assert served == ["high1", "high2", "mid1", "mid2", "low1", "low2"]
    assert len(ids) == 6


def test_batched_claim_keeps_priority_order(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _noop(registry)
    for i in range(5):
        _submit(client, f"p{i}", priority=i)
    jobs, _ = broker.claim(["default"], count=3)
    assert [j.name for j in jobs] == ["p4", "p3", "p2"]
    assert len({j.token for j in jobs}) == 3


def test_a_delayed_job_does_not_run_early(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _noop(registry)
    _submit(client, "later", delay=0.6)
    start = time.monotonic()
    jobs, wake = broker.claim(["default"])
    assert jobs == [] and 0.3 < wake <= 0.6
    time.sleep(wake / 2)
    assert broker.claim(["default"])[0] == []
    while not (jobs := broker.claim(["default"])[0]):
        time.sleep(0.01)
    assert time.monotonic() - start >= 0.59
    assert jobs[0].name == "later"


def test_claims_track_the_earliest_delayed_job_without_reading_the_delayed_set(
    client: Client, broker: Broker, registry: Registry, r: Any
) -> None:
    # Claims read the queue's next_due instead of the delayed set on every call; it must
    # follow adds (an earlier job lowers it), cancellations (a stale early value costs one
    # read, never a lost job) and a queue that never recorded it (read once, then kept).
    _noop(registry)
    meta = broker.keys.meta("default")
    _submit(client, "late", delay=30)
    assert broker.claim(["default"])[0] == []
    due = int(r.hget(meta, "next_due"))
    assert due > 0
    early = _submit(client, "early", delay=0.3)
    assert int(r.hget(meta, "next_due")) < due
    jobs, wake = broker.claim(["default"])
    assert jobs == [] and 0 < wake <= 0.3
    while not (jobs := broker.claim(["default"])[0]):
        time.sleep(0.01)
    assert [j.id for j in jobs] == [early]
    assert int(r.hget(meta, "next_due")) == due  # back to the late one

    r.hdel(meta, "next_due")  # a queue that never recorded it
    _submit(client, "soon", delay=0.2)
    assert r.hget(meta, "next_due") is None  # not guessed from one add
    time.sleep(0.25)
    assert [j.name for j in broker.claim(["default"])[0]] == ["soon"]
    assert int(r.hget(meta, "next_due")) == due


def test_run_at_in_the_past_runs_now(client: Client, broker: Broker, registry: Registry) -> None:
    _noop(registry)
    _submit(client, "past", run_at=time.time() - 60)
    assert [j.name for j in broker.claim(["default"])[0]] == ["past"]


def test_a_paused_queue_hands_out_nothing_until_resumed(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _noop(registry)
    _submit(client, "p")
    client.pause("default")
    assert broker.claim(["default"])[0] == []
    assert client.queue_counts("default") == {"waiting": 1, "active": 0, "delayed": 0, "paused": 1}
    client.resume("default")
    assert [j.name for j in broker.claim(["default"])[0]] == ["p"]


def test_claim_tries_queues_in_order_and_skips_a_paused_one(
    client: Client, broker: Broker, registry: Registry
) -> None:
    @stage("a", registry=registry, queue="qa")
    def a(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None: ...

    @stage("b", registry=registry, queue="qb")
    def b(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None: ...

    for name, st in (("a1", "a"), ("b1", "b")):
        dag = Dag()
        dag.add(name, st)
        client.submit(dag)
    client.pause("qa")
    assert [j.name for j in broker.claim(["qa", "qb"])[0]] == ["b1"]
    client.resume("qa")
    assert [j.name for j in broker.claim(["qa", "qb"])[0]] == ["a1"]


def test_rate_limit_caps_jobs_started_per_window(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _noop(registry)
    for i in range(5):
        _submit(client, f"r{i}")
    client.set_rate_limit("default", 2, per_seconds=0.5)
    first, _ = broker.claim(["default"], count=5)
    assert len(first) == 2
    none, wake = broker.claim(["default"])
    assert none == [] and 0 < wake <= 0.5
    time.sleep(wake + 0.02)
    assert len(broker.claim(["default"], count=5)[0]) == 2


def test_an_idle_worker_is_woken_by_a_submission(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _noop(registry)
    broker.redis.delete(broker.keys.marker("default"))
    assert broker.wait_for_work(["default"], 0.05) is False
    _submit(client, "wake")
    assert broker.wait_for_work(["default"], 2.0) is True
