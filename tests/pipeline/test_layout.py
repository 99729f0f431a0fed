"""The compact Redis layout of schema 2 (docs/redis-layout.md): what a waiting DAG stores,
and that nothing is lost by storing it that way."""

from __future__ import annotations

import time
from typing import Any

import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.registry import Registry, stage
from tests.helpers import run_dag


def _echo(registry: Registry) -> None:
    @stage("echo", registry=registry)
    def echo(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        return {"params": params, "inputs": sorted(inputs)}


def test_a_waiting_dag_has_no_event_stream_yet_and_still_replays_its_submit(
    r: redis.Redis, namespace: str, client: Client, broker: Broker, registry: Registry
) -> None:
    _echo(registry)
    dag = Dag()
    dag.add("a", "echo")
    dag.add("b", "echo", after=["a"])
    before = time.time() * 1000
    client.submit(dag)
    assert r.exists(Keys(namespace).dag_events(dag.id)) == 0
    (ev,) = client.events(dag.id)
    assert (ev.type, ev.fields) == ("submitted", {"jobs": "2"})
    assert before - 1000 <= ev.timestamp_ms <= time.time() * 1000 + 1000
    assert run_dag(client, broker, dag.id) == "completed"
    types = [e.type for e in client.events(dag.id)]
    assert types[0] == "submitted" and types[-1] == "dag_completed"
    assert types.count("submitted") == 1 and types.count("completed") == 2
    # A watcher resuming after the submitted event gets the rest, nothing twice.
    rest = [e.type for e in client.events(dag.id, after=ev.id)]
    assert rest == types[1:]


def test_job_hashes_stay_listpacks_and_long_values_come_back_whole(
    r: redis.Redis, namespace: str, client: Client, broker: Broker, registry: Registry
) -> None:
    _echo(registry)
    keys = Keys(namespace)
    dag = Dag(meta={"input": "/data/" + "m" * 300})
    medium = {"text": "é" + "x" * 180 + '\\"}', "n": list(range(20))}  # a few pieces
    huge = {"text": "y" * 10_000}  # more pieces than a listpack holds: kept whole
    dag.add("medium", "echo", medium)
    dag.add("huge", "echo", huge)
    dag.add("join", "echo", after=["medium", "huge"])
    client.submit(dag)
    assert r.object("encoding", keys.job(dag.job_id("medium"))) == b"listpack"
    assert r.object("encoding", keys.job(dag.job_id("join"))) == b"listpack"
    assert r.object("encoding", keys.dag(dag.id)) == b"listpack"
    assert client.job(dag.job_id("medium"))["params"] == medium  # type: ignore[index]
    assert client.dag(dag.id)["meta"]["input"] == "/data/" + "m" * 300  # type: ignore[index]
    jobs, _ = broker.claim(["default"], count=2)
    assert {j.name: j.params for j in jobs} == {"medium": medium, "huge": huge}
    broker.release(jobs)
    assert run_dag(client, broker, dag.id) == "completed"
    join = client.job(dag.job_id("join"))
    assert join is not None and join["result"]["inputs"] == ["huge", "medium"]
    assert join["name"] == "join" and join["dag"] == dag.id and join["id"] == dag.job_id("join")


def test_a_child_with_more_parents_than_fit_inline_releases_every_one(
    r: redis.Redis, namespace: str, client: Client, broker: Broker, registry: Registry
) -> None:
    # 450 parents of one child with long names: more than a 3,840-byte parents field, and
    # written over three submit steps, each adding parents to the child of the first.
    _echo(registry)
    dag = Dag()
    dag.add("source", "echo")
    for i in range(450):
        dag.add(f"p{i:03d}-" + "n" * 60, "echo", after=["source"])
    client.submit(dag)
    child = Keys(namespace).job(dag.job_id("source"))
    assert r.hget(child, "parents") == b"*"
    assert r.hlen(Keys(namespace).job_parents(dag.job_id("source"))) == 450
    assert run_dag(client, broker, dag.id, prefetch=32, timeout=60) == "completed"
    results = [client.job(dag.job_id(f"p{i:03d}-" + "n" * 60)) for i in range(450)]
    assert all(j is not None and j["result"]["inputs"] == ["source"] for j in results)


def test_waiting_dags_cost_what_the_docs_say(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    # Bytes of Redis memory per waiting one-job DAG (docs/redis-layout.md: under 1,500
    # on Redis 7.0 and Valkey 8); 2,000 DAGs so one allocation more or less is noise.
    _echo(registry)
    client.submit_many([_one(-1)])
    before = int(r.info("memory")["used_memory"])
    client.submit_many([_one(i) for i in range(2000)])
    per_dag = (int(r.info("memory")["used_memory"]) - before) / 2000
    assert per_dag < 1500, per_dag


def _one(i: int) -> Dag:
    dag = Dag()
    dag.add("noop", "echo", {"i": i, "op": "noop", "src": f"media/clip_{i:06d}.mp4"})
    return dag


def test_a_refused_dag_in_a_batch_writes_nothing_and_the_others_are_written(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    _echo(registry)
    first = _one(1)
    client.submit(first)
    again = Dag(dag_id=first.id)  # same id: refused as existing
    again.add("other", "echo")
    batch = [_one(2), again, _one(3)]
    try:
        client.submit_many(batch)
    except Exception as exc:
        assert f"DAG {first.id} already exists" in str(exc)
    else:
        raise AssertionError("a DAG with an existing id was accepted")
    assert client.dag_state(batch[0].id) == "running" and client.dag_state(batch[2].id) == "running"
    assert client.job(first.job_id("other")) is None
    assert client.queue_counts("default")["waiting"] == 3


def test_a_dag_refused_before_sending_leaves_the_rest_of_a_streamed_batch_written(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    # 300 DAGs go out in calls of 50 jobs while later ones are still being encoded; one
    # in the middle names an unknown stage: it is left out, the 299 others are written.
    _echo(registry)
    batch = [_one(i) for i in range(300)]
    bad = Dag()
    bad.add("x", "no-such-stage")
    batch[150] = bad
    try:
        client.submit_many(batch)
    except Exception as exc:
        assert "no-such-stage" in str(exc)
    else:
        raise AssertionError("a DAG with an unknown stage was accepted")
    assert client.queue_counts("default")["waiting"] == 299
    assert client.dag(bad.id) is None
    # The connection is still in step: the next call gets its own reply.
    assert client.submit(_one(1000)).created
