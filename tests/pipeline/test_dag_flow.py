"""DAG semantics: ordering, results flowing to parents, edge policies, fan-out."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import PermanentError
from pipeline.model import Dag, EdgePolicy
from pipeline.registry import Registry, stage
from tests.helpers import run_dag
from workers.inline import InlineRunner


def test_diamond_runs_the_join_once_after_both_branches_with_both_results(
    client: Client, broker: Broker, registry: Registry
) -> None:
    runs: list[str] = []

    @stage("step", registry=registry)
    def step(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        runs.append(params["name"])
        return {"name": params["name"], "saw": sorted(inputs)}

    dag = Dag()
    dag.add("a", "step", {"name": "a"})
    dag.add("b", "step", {"name": "b"}, after=["a"])
    dag.add("c", "step", {"name": "c"}, after=["a"])
    dag.add("d", "step", {"name": "d"}, after=["b", "c"])
    client.submit(dag)

    assert run_dag(client, broker, dag.id) == "completed"
    assert Counter(runs) == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert runs[0] == "a" and runs[-1] == "d"
    d = client.job(dag.job_id("d"))
    assert d is not None
    assert d["result"] == {"name": "d", "saw": ["b", "c"]}
    results = client.redis.hgetall(client.keys.job_results(dag.job_id("d")))
    assert {k.decode() for k in results} == {dag.job_id("b"), dag.job_id("c")}
    assert client.job(dag.job_id("b"))["result"] == {"name": "b", "saw": ["a"]}  # type: ignore[index]


def test_ten_thousand_jobs_complete_with_none_lost_or_run_twice(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    @stage("leaf", registry=registry)
    def leaf(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        with lock:
            runs[ctx.job_id] += 1
        return int(params["i"])

    @stage("group", registry=registry)
    def group(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        with lock:
            runs[ctx.job_id] += 1
        return sum(inputs.values())

    dag = Dag()
    for g in range(100):
        leaves = [dag.add(f"l{g}-{i}", "leaf", {"i": g * 1000 + i}) for i in range(99)]
        dag.add(f"g{g}", "group", after=leaves)
    assert len(dag.nodes) == 10_000
    client.submit(dag)

    # Two runners on their own connections compete for the same jobs.
    brokers = [
        Broker(
            redis.Redis(connection_pool=r.connection_pool), namespace=namespace, registry=registry
        )
        for _ in range(2)
    ]
    done = threading.Event()
    threads = [
        threading.Thread(
            target=InlineRunner(b, prefetch=16, idle_wait=0.05).run, args=(done.is_set,)
        )
        for b in brokers
    ]
    for t in threads:
        t.start()
    try:
        end = time.monotonic() + 120.0
        while client.dag_state(dag.id) == "running" and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        done.set()
        for t in threads:
            t.join(30)

    info = client.dag(dag.id)
    assert info is not None
    assert info["state"] == "completed"
    assert info["completed"] == 10_000 and info["total"] == 10_000
    assert len(runs) == 10_000
    assert set(runs.values()) == {1}
    for g in (0, 57, 99):
        expected = sum(g * 1000 + i for i in range(99))
        assert client.job(dag.job_id(f"g{g}"))["result"] == expected  # type: ignore[index]


def _failing_and_ok_stages(registry: Registry) -> None:
    @stage("boom", registry=registry, attempts=1)
    def boom(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        raise PermanentError("unreadable input")

    @stage("ok", registry=registry)
    def ok(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        return {"inputs": inputs, "failures": sorted(ctx.job.failures)}


def test_fail_policy_fails_every_ancestor_and_the_dag(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _failing_and_ok_stages(registry)
    dag = Dag()
    dag.add("bad", "boom")
    dag.add("good", "ok")
    dag.add("mid", "ok", after=["bad", "good"])
    dag.add("top", "ok", after=["mid"])
    client.submit(dag)

    assert run_dag(client, broker, dag.id) == "failed"
    jobs = client.jobs(dag.id)
    assert jobs["bad"]["state"] == "dead"
    assert jobs["good"]["state"] == "completed"
    assert jobs["mid"]["state"] == "upstream_failed"
    assert jobs["top"]["state"] == "upstream_failed"
    assert "bad" in jobs["mid"]["error"]["message"]


def test_ignore_and_continue_policies_let_the_parent_run(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _failing_and_ok_stages(registry)
    dag = Dag()
    dag.add("bad1", "boom")
    dag.add("bad2", "boom")
    dag.add("good", "ok")
    dag.add(
        "top",
        "ok",
        after={"bad1": EdgePolicy.IGNORE, "bad2": EdgePolicy.CONTINUE, "good": EdgePolicy.FAIL},
    )
    client.submit(dag)

    assert run_dag(client, broker, dag.id) == "completed"
    top = client.job(dag.job_id("top"))
    assert top is not None and top["state"] == "completed"
    assert sorted(top["result"]["inputs"]) == ["good"]
    assert top["result"]["failures"] == ["bad2"]
    info = client.dag(dag.id)
    assert info is not None and info["dead"] == 2


def test_shared_child_with_two_parents_runs_once(
    client: Client, broker: Broker, registry: Registry
) -> None:
    calls: Counter[str] = Counter()

    @stage("count", registry=registry)
    def count(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
        calls[ctx.job.name] += 1
        return ctx.job.name

    dag = Dag()
    dag.add("probe", "count")
    dag.add("image", "count", after=["probe"])
    dag.add("video", "count", after=["probe"])
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "completed"
    assert calls == {"probe": 1, "image": 1, "video": 1}
    info = client.dag(dag.id)
    assert info is not None and info["roots"] == 2 and info["roots_failed"] == 0


def test_a_running_job_can_fan_out_and_its_parent_waits_for_the_new_jobs(
    client: Client, broker: Broker, registry: Registry
) -> None:
    @stage("split", registry=registry)
    def split(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        sub = ctx.new_children()
        for i in range(params["n"]):
            sub.add(f"seg{i}", "segment", {"i": i})
        ctx.add_children(sub)
        return params["n"]

    @stage("segment", registry=registry)
    def segment(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        return int(params["i"]) * 10

    @stage("join", registry=registry)
    def join(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        return inputs

    dag = Dag()
    dag.add("split", "split", {"n": 4})
    dag.add("join", "join", after=["split"])
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "completed"
    joined = client.job(dag.job_id("join"))
    assert joined is not None
    assert joined["result"] == {"split": 4, "seg0": 0, "seg1": 10, "seg2": 20, "seg3": 30}
    info = client.dag(dag.id)
    assert info is not None and info["total"] == 6 and info["completed"] == 6
