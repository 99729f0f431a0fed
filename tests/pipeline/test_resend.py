"""A transition whose reply is lost runs once: the resend gets the first run's reply.

Each test puts the fault proxy between the client and the real server and breaks the
reply to one named FCALL: dropped with its connection after Redis ran the call, or
delayed past the client's socket timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.breaker import ServiceBreakers
from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.registry import Registry, stage
from pipeline.schedules import Schedules
from pipeline.scripts import Scripts
from tests.faultproxy import FaultProxy
from tests.helpers import server_without_functions


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(redis_url) as p:
        yield p


@pytest.fixture
def pr(proxy: FaultProxy) -> Iterator[redis.Redis]:
    """A client through the proxy with a short socket timeout."""
    c = redis.Redis.from_url(proxy.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    yield c
    c.close()


def _work(registry: Registry) -> None:
    @stage("work", registry=registry)
    def work(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        return 1


def _wide_dags(count: int, jobs: int) -> list[Dag]:
    """``count`` DAGs of ``jobs`` independent "work" jobs each."""
    dags = [Dag() for _ in range(count)]
    for d in dags:
        for i in range(jobs):
            d.add(f"w{i}", "work")
    return dags


def _submit(client: Client, n: int) -> list[Dag]:
    dags = []
    for i in range(n):
        dag = Dag()
        dag.add("w", "work", {"i": i})
        client.submit(dag)
        dags.append(dag)
    return dags


@pytest.mark.parametrize("action", ["drop", "delay"])
def test_a_claim_whose_reply_is_lost_hands_out_the_same_job_once(
    action: str,
    proxy: FaultProxy,
    pr: redis.Redis,
    r: redis.Redis,
    namespace: str,
    client: Client,
    registry: Registry,
) -> None:
    _work(registry)
    _submit(client, 2)
    keys = Keys(namespace)
    broker = Broker(pr, namespace=namespace, registry=registry)
    proxy.on_reply("claim", 1, action, delay=1.5)
    jobs, _ = broker.claim(["default"], 1)
    assert proxy.fired() == 1
    assert len(jobs) == 1
    # One job active, held by the token this worker got; the other still waiting.
    assert r.zcard(keys.active("default")) == 1
    assert r.zcard(keys.wait("default")) == 1
    job = client.job(jobs[0].id)
    assert job is not None and job["owner"] == jobs[0].token and job["attempts"] == 1
    assert broker.complete(jobs[0], 1)[0] is True


@pytest.mark.parametrize(
    ("call", "action"),
    [("complete_many", "drop"), ("complete_next", "drop"), ("complete_next", "delay")],
)
def test_complete_and_next_claim_whose_reply_is_lost_record_once_and_hand_over(
    call: str,
    action: str,
    proxy: FaultProxy,
    pr: redis.Redis,
    r: redis.Redis,
    namespace: str,
    client: Client,
    registry: Registry,
) -> None:
    """Both ways a worker completes a job and claims the next (``complete_next`` is a
    busy worker's prepared call) leave the resend to the same record."""
    _work(registry)
    _submit(client, 3)
    broker = Broker(pr, namespace=namespace, registry=registry)
    (first,), _ = broker.claim(["default"], 1)
    proxy.on_reply("complete", 1, action, delay=1.5)
    if call == "complete_many":
        (accepted,), nxt = broker.complete_many([(first, 1)], next_from=["default"], count=1)
    else:
        accepted, nxt = broker.complete_next(first, 1, ["default"])
    assert proxy.fired() == 1
    assert accepted is True  # the first run's answer, not "discarded"
    assert len(nxt) == 1
    keys = Keys(namespace)
    assert r.zcard(keys.active("default")) == 1 and r.zcard(keys.wait("default")) == 1
    assert client.job(nxt[0].id)["owner"] == nxt[0].token  # type: ignore[index]
    assert [e.type for e in client.events(first.dag_id)].count("completed") == 1


def test_a_lost_reply_that_completed_and_claimed_several_jobs_gives_them_back_whole(
    proxy: FaultProxy,
    pr: redis.Redis,
    r: redis.Redis,
    namespace: str,
    client: Client,
    registry: Registry,
) -> None:
    # The resend is answered from the request record, which keeps only the claimed
    # jobs' ids (claim_next.lua): a reply of several jobs, each with its child's result,
    # must come back with every job whole and in its place.
    _work(registry)
    for _ in range(3):
        dag = Dag()
        dag.add("c", "work")
        dag.add("p", "work", after=["c"])
        client.submit(dag)
    broker = Broker(pr, namespace=namespace, registry=registry)
    children, _ = broker.claim(["default"], 3)
    assert len(children) == 3
    proxy.on_reply("complete", 1, "drop")
    accepted, nxt = broker.complete_many(
        [(children[0], {"w": 0}), (children[1], {"w": 1})], next_from=["default"], count=3
    )
    assert proxy.fired() == 1
    assert accepted == [True, True]
    assert sorted(j.id for j in nxt) == sorted(f"{c.dag_id}/p" for c in children[:2])
    for job in nxt:
        mine = children[0] if job.dag_id == children[0].dag_id else children[1]
        assert job.inputs == {"c": {"w": 0 if mine is children[0] else 1}}
        assert job.stage == "work" and job.attempt == 1 and job.name == "p"
        assert client.job(job.id)["owner"] == job.token  # type: ignore[index]
    keys = Keys(namespace)
    assert r.zcard(keys.active("default")) == 3 and r.zcard(keys.wait("default")) == 0


def test_a_submit_whose_reply_is_lost_returns_its_dag(
    proxy: FaultProxy, pr: redis.Redis, namespace: str, registry: Registry
) -> None:
    _work(registry)
    client = Client(pr, namespace=namespace, registry=registry)
    dag = Dag()
    for i in range(50):
        dag.add(f"w{i}", "work", {"i": i})
    proxy.on_reply("submit_dag", 1, "drop")
    sub = client.submit(dag)
    assert proxy.fired() == 1
    assert sub.dag_id == dag.id and sub.created
    info = client.dag(dag.id)
    assert info is not None and info["total"] == 50


@pytest.mark.parametrize("action", ["drop", "delay"])
@pytest.mark.parametrize("key", [None, "upload-1"])
def test_a_one_job_submit_whose_reply_is_lost_is_written_once(
    action: str,
    key: str | None,
    proxy: FaultProxy,
    pr: redis.Redis,
    r: redis.Redis,
    namespace: str,
    registry: Registry,
) -> None:
    """submit_one: the resend finds the DAG its first send wrote (by its request id,
    before the idempotency key, which names that same DAG by then)."""
    _work(registry)
    client = Client(pr, namespace=namespace, registry=registry)
    dag = Dag(idempotency_key=key)
    dag.add("w", "work", {"i": 1})
    proxy.on_reply("submit_one", 1, action, delay=1.5)
    sub = client.submit(dag)
    assert proxy.fired() == 1
    assert sub.dag_id == dag.id and sub.created
    keys = Keys(namespace)
    assert r.zcard(keys.wait("default")) == 1
    assert r.xlen(keys.events) == 1  # one `submitted` event
    assert client.queue_counts("default")["waiting"] == 1


@pytest.mark.parametrize("jobs", [3, 450])  # one call; a large DAG's first step of three
def test_a_submit_with_an_idempotency_key_whose_reply_is_lost_is_created_and_whole(
    jobs: int, proxy: FaultProxy, pr: redis.Redis, namespace: str, registry: Registry
) -> None:
    """The resend finds the DAG its first send created under the key: that is this
    submit's own DAG (created), not an earlier one's, and a large DAG goes on to its
    remaining steps instead of staying `building`."""
    _work(registry)
    client = Client(pr, namespace=namespace, registry=registry)
    dag = Dag(idempotency_key="upload-42")
    for i in range(jobs):
        dag.add(f"w{i}", "work", {"i": i})
    proxy.on_reply("submit_dag", 1, "drop")
    sub = client.submit(dag)
    assert proxy.fired() == 1
    assert sub.dag_id == dag.id and sub.created
    info = client.dag(dag.id)
    assert info is not None and info["state"] == "running" and info["total"] == jobs
    assert client.queue_counts("default")["waiting"] == jobs
    # A second submit with the key is answered with this DAG, not created again.
    again = Dag(idempotency_key="upload-42")
    again.add("w0", "work")
    assert client.submit(again) == type(sub)(dag.id, False)


def test_a_pipelined_submit_sent_again_finds_its_dags(
    proxy: FaultProxy, pr: redis.Redis, namespace: str, registry: Registry
) -> None:
    # 150 jobs each: one call per DAG (a call carries up to 200 jobs), three pipelined
    _work(registry)
    client = Client(pr, namespace=namespace, registry=registry)
    dags = _wide_dags(3, 150)
    proxy.on_reply("submit_dag", 2, "drop")  # redis-py sends the whole pipeline again
    subs = client.submit_many(dags)
    assert proxy.fired() == 1
    assert [s.dag_id for s in subs] == [d.id for d in dags] and all(s.created for s in subs)
    assert client.queue_counts("default")["waiting"] == 450


def test_a_streamed_submit_whose_connection_dies_while_sending_loses_no_dag(
    proxy: FaultProxy, pr: redis.Redis, namespace: str, registry: Registry
) -> None:
    # Six calls streamed (150 jobs each); the second is lost with its connection while
    # the client still encodes and sends the later ones: every DAG is written once.
    _work(registry)
    client = Client(pr, namespace=namespace, registry=registry)
    dags = _wide_dags(6, 150)
    proxy.on_request("submit_dag", 2)
    subs = client.submit_many(dags)
    assert proxy.fired() == 1
    assert [s.dag_id for s in subs] == [d.id for d in dags] and all(s.created for s in subs)
    assert client.queue_counts("default")["waiting"] == 900


def test_a_call_of_many_small_dags_sent_again_finds_each(
    proxy: FaultProxy, pr: redis.Redis, namespace: str, registry: Registry
) -> None:
    _work(registry)
    client = Client(pr, namespace=namespace, registry=registry)
    dags = [Dag(idempotency_key=f"file-{i}" if i % 2 else None) for i in range(50)]
    for d in dags:
        d.add("w", "work")
    proxy.on_reply("submit_dag", 1, "drop")
    subs = client.submit_many(dags)
    assert proxy.fired() == 1
    assert [s.dag_id for s in subs] == [d.id for d in dags] and all(s.created for s in subs)
    assert client.queue_counts("default")["waiting"] == 50


def test_a_cancel_whose_reply_is_lost_reports_what_it_cancelled(
    proxy: FaultProxy, pr: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    _work(registry)
    dag = Dag()
    for i in range(20):
        dag.add(f"w{i}", "work", {"i": i})
    client.submit(dag)
    proxy.on_reply("cancel_dag", 1, "drop")
    assert Client(pr, namespace=namespace, registry=registry).cancel(dag.id) == (20, 0)
    assert proxy.fired() == 1


def test_add_children_whose_reply_is_lost_adds_them_once(
    proxy: FaultProxy,
    pr: redis.Redis,
    r: redis.Redis,
    namespace: str,
    client: Client,
    registry: Registry,
) -> None:
    _work(registry)
    (dag,) = _submit(client, 1)
    broker = Broker(pr, namespace=namespace, registry=registry)
    (job,), _ = broker.claim(["default"], 1)
    sub = Dag(dag.id)
    for i in range(3):
        sub.add(f"{job.name}.part{i}", "work", {"i": i})
    proxy.on_reply("add_children", 1, "drop")
    assert broker.add_children(job, sub) == 3
    assert proxy.fired() == 1
    info = client.dag(dag.id)
    assert info is not None and info["total"] == 4
    assert r.zcard(Keys(namespace).wait("default")) == 3


def test_a_schedule_tick_whose_reply_is_lost_still_fires(
    proxy: FaultProxy, pr: redis.Redis, namespace: str, registry: Registry
) -> None:
    _work(registry)
    client = Client(pr, namespace=namespace, registry=registry)
    spec = Schedules(client).add("s1", "/nowhere/*.jpg", every=60, preset="image")
    prefix = client.keys.prefix

    def tick(at: int) -> int:
        return int(client.scripts.run("claim_tick", prefix, "s1", at, 1, spec.id))

    assert tick(1000) == 1
    proxy.on_reply("claim_tick", 1, "drop")
    assert tick(2000) == 1  # won, not "already taken" by its own first send
    assert proxy.fired() == 1
    assert tick(2000) == 0


def test_a_service_failure_whose_reply_is_lost_counts_once(
    proxy: FaultProxy, pr: redis.Redis, r: redis.Redis, namespace: str
) -> None:
    breakers = ServiceBreakers(pr, namespace=namespace)
    proxy.on_reply("service_outcome", 1, "drop")
    breakers.outcome("s3:bucket", False)
    assert proxy.fired() == 1
    assert int(r.hget(Keys(namespace).prefix + "breaker:s3:bucket", "failures") or 0) == 1


# Sequence numbers are compared as text by length, then digits: 10 is newer than 9.
@pytest.mark.parametrize(("old", "new"), [(1, 2), (9, 10), (99, 100), (123, 129)])
def test_an_old_request_arriving_after_a_newer_one_is_refused(
    old: int, new: int, r: redis.Redis, namespace: str, client: Client
) -> None:
    """A call delayed on a connection its client gave up on must not run late."""
    from pipeline.scripts import library

    _, prefix = library()
    fn = prefix + "pause_queue"
    ns = Keys(namespace).prefix
    assert r.fcall(fn, 1, ns, "q1", f"c1:{new}", "n") == 1
    with pytest.raises(redis.ResponseError, match="STALE"):
        r.fcall(fn, 1, ns, "q2", f"c1:{old}", "n")
    assert r.hget(Keys(namespace).meta("q2"), "paused") is None
    # and the same request again returns its first reply without running
    r.hdel(Keys(namespace).meta("q1"), "paused")
    assert r.fcall(fn, 1, ns, "q1", f"c1:{new}", "r") == 1
    assert r.hget(Keys(namespace).meta("q1"), "paused") is None
    # a newer one still runs
    assert r.fcall(fn, 1, ns, "q3", f"c1:{new + 1}", "n") == 1
    assert r.hget(Keys(namespace).meta("q3"), "paused") == b"1"


def test_a_claim_in_doubt_across_a_long_outage_still_gets_its_own_job(
    proxy: FaultProxy,
    pr: redis.Redis,
    r: redis.Redis,
    namespace: str,
    client: Client,
    registry: Registry,
) -> None:
    """A worker rides out an outage of any length and then resends its call in doubt. The
    record that answers the resend must outlive the outage: here the record is aged by
    an 11-minute outage (its remaining life cut by that much); the resent claim still
    hands back the job the first one took, and the other job stays waiting."""
    _work(registry)
    _submit(client, 2)
    keys = Keys(namespace)
    broker = Broker(pr, namespace=namespace, registry=registry)
    broker.scripts.resend_for = 0  # give up at once: the call stays in doubt
    proxy.on_reply("claim", 1, "drop")
    with pytest.raises(redis.ConnectionError):
        broker.claim(["default"], 1)
    assert broker.scripts.in_doubt
    (record,) = r.keys(keys.prefix + "req:*")
    r.pexpire(record, max(1, r.pttl(record) - 11 * 60_000))
    time.sleep(0.01)
    jobs, _ = broker.claim(["default"], 1)  # the resend, after the outage
    assert len(jobs) == 1
    assert r.zcard(keys.active("default")) == 1, "the resend took a second job"
    assert r.zcard(keys.wait("default")) == 1
    job = client.job(jobs[0].id)
    assert job is not None and job["owner"] == jobs[0].token and job["attempts"] == 1


def test_a_bulk_submit_to_a_server_that_lost_its_functions_creates_every_dag(
    r: redis.Redis, client: Client, registry: Registry, namespace: str
) -> None:
    """Streamed calls answered with errors ("function not found" after a restart without
    persistence): every reply is read, the library loaded again, the calls resent; the
    thread's next calls read their own replies, not the stream's leftovers."""
    _work(registry)
    dags = _wide_dags(4, 30)  # four calls on the stream
    client.submit_many(_wide_dags(1, 1))  # the thread's connection is held now
    r.function_flush()
    assert all(s.created for s in client.submit_many(dags))
    for d in dags:
        assert client.dag_state(d.id) == "running"
    assert client.scripts.run("pause_queue", client.keys.prefix, "q1") == 1
    until = client.scripts.run("throttle_queue", client.keys.prefix, "q1", 1000)
    assert until > 1_000_000_000_000  # a time in ms, its own reply
    assert r.hget(Keys(namespace).meta("q1"), "paused") == b"1"


def test_durable_calls_are_refused_on_a_server_without_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis 6.2 (here: FUNCTION renamed away) runs the transitions as EVALSHA through the
    client's pool, where no WAIT can vouch for them: MEDIAPIPE_DURABLE says so at once
    instead of acknowledging what no replica was asked to hold."""
    with server_without_functions(tmp_path) as r:
        assert Scripts(r).durable == 0  # without the setting: scripts, as before
        monkeypatch.setenv("MEDIAPIPE_DURABLE", "1")
        with pytest.raises(ValueError, match="MEDIAPIPE_DURABLE=1 needs a server with functions"):
            Scripts(r)
