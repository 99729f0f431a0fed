"""Exactly once under faults, on the engine's side: identifiers checked before anything is
written, a fan-out that survives a retry of its job, retry-all that retries each dead job
once, and a job handed back or reclaimed that keeps its place in its queue."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from mediajobs.cli import main
from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import PermanentError, RetryableError, SubmissionError
from pipeline.keys import Keys
from pipeline.model import Backoff, Dag, JobOptions
from pipeline.registry import Registry, stage
from pipeline.scripts import REQUEST_ID
from pipeline.submission import DEFAULT_BACKOFF, encode_meta, encode_nodes
from tests.helpers import run_dag
from workers.inline import InlineRunner


def _keys_left(r: redis.Redis, namespace: str) -> list[str]:
    return sorted(k.decode() for k in r.scan_iter(match=Keys(namespace).pattern()))


def _noop(registry: Registry) -> None:
    @stage("noop", registry=registry)
    def noop(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        return 1


# -- identifiers ---------------------------------------------------------------------


@pytest.mark.parametrize("dag_id", ["a:b", "x:jobs", "a{b}", "sp ace", "", "é", "d" * 65])
def test_a_dag_id_outside_the_character_set_is_refused_at_once(dag_id: str) -> None:
    with pytest.raises(SubmissionError, match="DAG id"):
        Dag(dag_id)


@pytest.mark.parametrize("name", ["a:jobs", "b:deps", "x/y", "", "has space", "n" * 129])
def test_a_job_name_outside_the_character_set_is_refused_at_once(name: str) -> None:
    with pytest.raises(SubmissionError, match="job name"):
        Dag().add(name, "noop")


def test_names_made_of_the_character_set_are_accepted() -> None:
    dag = Dag("Batch-2026.11_24")
    dag.add("part0", "noop")
    dag.add("seg.part-12_b", "noop", after=["part0"])
    assert dag.job_id("seg.part-12_b") == "Batch-2026.11_24/seg.part-12_b"


@pytest.mark.parametrize("ns", ["a:b", "a}b", "{x", "", "n" * 33, "a b"])
def test_a_namespace_outside_the_character_set_is_refused(r: redis.Redis, ns: str) -> None:
    with pytest.raises(SubmissionError, match="namespace"):
        Client(r, namespace=ns)


def test_the_cli_refuses_a_bad_namespace_with_exit_2() -> None:
    res = CliRunner().invoke(main, ["--namespace", "a:b", "status"])
    assert res.exit_code == 2, res.output
    assert "namespace" in res.output


def _send_submit(client: Client, dag_id: str, jobs: list[dict[str, Any]]) -> None:
    client.scripts.run(
        "submit_dag",
        client.keys.prefix,
        dag_id,
        "idem-crafted",
        encode_meta({}),
        json.dumps(jobs),
        REQUEST_ID,
    )


def _good_jobs(client: Client, dag_id: str, names: list[str]) -> list[dict[str, Any]]:
    _noop(client.registry)
    dag = Dag()
    prev: list[str] = []
    for n in names:
        dag.add(n, "noop", after=prev)
        prev = [n]
    jobs: list[dict[str, Any]] = json.loads(encode_nodes(dag, client.registry))
    for j in jobs:  # re-home them under the crafted DAG id
        j["id"] = f"{dag_id}/{j['name']}"
        children = j.get("children", [])
        j["children"] = [[f"{dag_id}/{c.split('/', 1)[1]}", p] for c, p in children]
    return jobs


def _crafted(client: Client) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(what, dag id, jobs): payloads a buggy or hostile client could send."""
    cases: list[tuple[str, str, list[dict[str, Any]]]] = []
    cases.append(("colon in the DAG id", "d1:jobs", _good_jobs(client, "d1:jobs", ["a"])))
    jobs = _good_jobs(client, "d2", ["a", "b", "c"])
    jobs[2]["name"] = jobs[2]["id"] = "d2/c:deps"
    cases.append(("colon in the last job's name", "d2", jobs))
    jobs = _good_jobs(client, "d3", ["a", "b"])
    del jobs[1]["stage"]
    cases.append(("a job with no stage", "d3", jobs))
    jobs = _good_jobs(client, "d4", ["a", "b"])
    jobs[1]["id"] = "other/b"
    cases.append(("a job id outside its DAG", "d4", jobs))
    jobs = _good_jobs(client, "d5", ["a", "b"])
    jobs[1]["children"] = [["d5/nope", "fail"]]
    cases.append(("a child that is not in the DAG", "d5", jobs))
    jobs = _good_jobs(client, "d6", ["a", "b"])
    jobs[0]["children"] = [["d6/b", "fail"]]
    cases.append(("a cycle (a parent listed before its child)", "d6", jobs))
    jobs = _good_jobs(client, "d7", ["a", "b"])
    jobs[1]["children"] = [["d7/a", "sometimes"]]
    cases.append(("an unknown edge policy", "d7", jobs))
    jobs = _good_jobs(client, "d8", ["a", "b"])
    jobs.append(dict(jobs[1]))
    cases.append(("a job listed twice", "d8", jobs))
    jobs = _good_jobs(client, "d9", ["a", "b"])
    jobs[1]["max_attempts"] = "many"
    cases.append(("attempts that are not a number", "d9", jobs))
    cases.append(("no jobs", "d10", []))
    # Fields the client leaves out at their usual value are still checked when present.
    for n, (field, value) in enumerate(
        [
            ("prio", "high"),
            ("prio", 5000),
            ("cost", 0),
            ("max_stalls", -1),
            ("tags", 3),
            ("backoff", {"base": 1}),
            ("fallback", 1),
            ("children", "a"),
            ("run_at", "soon"),
        ]
    ):
        jobs = _good_jobs(client, f"e{n}", ["a", "b"])
        jobs[1][field] = value
        cases.append((f"{field} {value!r}", f"e{n}", jobs))
    return cases


def test_a_crafted_submit_sent_straight_to_the_script_leaves_no_key(
    r: redis.Redis, namespace: str, client: Client
) -> None:
    for what, dag_id, jobs in _crafted(client):
        with pytest.raises(redis.ResponseError):
            _send_submit(client, dag_id, jobs)
        assert _keys_left(r, namespace) == [], what
    # The same path still writes a well-formed DAG.
    _send_submit(client, "ok", _good_jobs(client, "ok", ["a", "b"]))
    assert client.dag_state("ok") == "running"


def _send_many(client: Client, entries: list[list[Any]]) -> list[Any]:
    reply: list[Any] = client.scripts.run(
        "submit_dag", client.keys.prefix, "", "", "", "", REQUEST_ID, "many", json.dumps(entries)
    )
    return reply


def test_a_call_of_many_crafted_dags_writes_nothing_and_good_ones_keep_their_order(
    r: redis.Redis, namespace: str, client: Client, broker: Broker
) -> None:
    meta = encode_meta({})
    crafted = [[dag_id, "", meta, jobs] for _, dag_id, jobs in _crafted(client)]
    assert all(status == -1 for _, status, *_ in _send_many(client, crafted))
    assert _keys_left(r, namespace) == []  # not even the queues' order counter
    # Refused DAGs between good ones leave gaps in the order, never a change of it.
    mixed = []
    for i in range(4):
        mixed.append([f"g{i}", "", meta, _good_jobs(client, f"g{i}", ["a"])])
        mixed.append(crafted[i])
    replies = _send_many(client, mixed)
    # A DAG written under its own id is answered 1, a refused one [id, -1, why].
    assert [e if e == 1 else e[1] for e in replies] == [1, -1] * 4
    claimed, _ = broker.claim(["default"], count=4)
    assert [j.id for j in claimed] == [f"g{i}/a" for i in range(4)]


def test_a_job_sent_without_the_fields_at_their_usual_value_gets_those_values(
    r: redis.Redis, client: Client, broker: Broker
) -> None:
    # What the client sends for a plain job: no prio, cost, tags, backoff, children...
    _noop(client.registry)
    plain = Dag("plain")
    plain.add("a", "noop")
    (job,) = json.loads(encode_nodes(plain, client.registry))
    assert set(job) == {
        "id",
        "name",
        "stage",
        "queue",
        "params",
        "max_attempts",
        "timeout_ms",
        "root",
    }
    _send_submit(client, "plain", [job])
    stored = r.hgetall(client.keys.job("plain/a"))
    assert {b"prio", b"cost", b"tags", b"backoff", b"max_stalls", b"run_at"} & set(stored) == set()
    (claimed,), _ = broker.claim(["default"])
    assert (claimed.id, claimed.cost, claimed.backoff, claimed.inputs) == (
        "plain/a",
        1,
        DEFAULT_BACKOFF,
        {},
    )
    # and the same fields, sent at other values, are kept
    dag = Dag("rich")
    dag.add("b", "noop", priority=7, cost=2, tags=("x",), backoff=Backoff(base=3.0, jitter=0.0))
    dag.add("a", "noop", after=["b"])
    client.submit(dag)
    rich = r.hgetall(client.keys.job("rich/b"))
    assert (rich[b"prio"], rich[b"cost"], rich[b"tags"]) == (b"7", b"2", b"x")
    assert json.loads(rich[b"backoff"])["base"] == 3
    assert r.hget(client.keys.job("rich/a"), "pending") == b"1"


def test_a_crafted_fan_out_sent_straight_to_the_script_adds_nothing(
    r: redis.Redis, namespace: str, client: Client, broker: Broker
) -> None:
    _noop(client.registry)
    dag = Dag("fan")
    dag.add("root", "noop")
    client.submit(dag)
    (job,), _ = broker.claim(["default"])
    before = _keys_left(r, namespace)
    good = _good_jobs(client, "fan", ["p0", "p1"])
    bad = [dict(good[0]), dict(good[1], stage=None)]
    other_dag = [dict(good[0], id="elsewhere/p0")]
    for what, jobs in [("a job with no stage", bad), ("a job of another DAG", other_dag)]:
        with pytest.raises(redis.ResponseError):
            client.scripts.run(
                "add_children", client.keys.prefix, job.id, job.token, json.dumps(jobs)
            )
        assert _keys_left(r, namespace) == before, what
    assert client.dag(dag.id)["total"] == 1  # type: ignore[index]


# -- fan-out and retries -------------------------------------------------------------


def test_a_job_that_fanned_out_and_is_retried_succeeds_and_each_child_runs_once(
    client: Client, broker: Broker, registry: Registry
) -> None:
    runs: Counter[str] = Counter()
    fanned: list[int] = []

    @stage("split", registry=registry, attempts=3, backoff=Backoff(base=0.01, jitter=0))
    def split(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        sub = ctx.new_children()
        for i in range(3):
            sub.add(f"{ctx.job.name}.part{i}", "piece", {"i": i})
        fanned.append(ctx.add_children(sub))
        if ctx.attempt == 1:
            raise RetryableError("storage blipped after the fan-out")
        return 3

    @stage("piece", registry=registry)
    def piece(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        runs[ctx.job.name] += 1
        return int(params["i"])

    @stage("join", registry=registry)
    def join(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
        return sorted(inputs)

    dag = Dag()
    dag.add("split", "split")
    dag.add("join", "join", after=["split"])
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "completed"
    assert fanned == [3, 3]
    assert runs == {"split.part0": 1, "split.part1": 1, "split.part2": 1}
    assert client.job(dag.job_id("split"))["attempts"] == 2  # type: ignore[index]
    assert client.job(dag.job_id("join"))["result"] == [  # type: ignore[index]
        "split",
        "split.part0",
        "split.part1",
        "split.part2",
    ]
    d = client.dag(dag.id)
    assert d is not None and d["total"] == 5 and d["completed"] == 5


@pytest.mark.parametrize("change", ["fewer", "params", "stage"])
def test_a_retried_attempt_that_fans_out_otherwise_fails_naming_the_change(
    change: str, client: Client, broker: Broker, registry: Registry
) -> None:
    """The first attempt added three parts, then failed; the second plans otherwise
    (fewer parts, other params, another stage). Its parents must not silently get the
    first plan's children: the fan-out is refused, naming the change, nothing is added,
    and the job goes to the dead-letter queue with that reason."""
    runs: Counter[str] = Counter()

    @stage("split", registry=registry, attempts=3, backoff=Backoff(base=0.01, jitter=0))
    def split(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        again = ctx.attempt > 1
        sub = ctx.new_children()
        for i in range(2 if again and change == "fewer" else 3):
            size = 99 if again and change == "params" and i == 1 else i
            kind = "other" if again and change == "stage" and i == 2 else "piece"
            sub.add(f"part{i}", kind, {"i": i, "size": size})
        n = int(ctx.add_children(sub))
        if not again:
            raise RetryableError("failed after the fan-out")
        return n

    @stage("piece", registry=registry)
    def piece(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        runs[ctx.job.name] += 1
        return int(params["i"])

    @stage("other", registry=registry)
    def other(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        return 0

    dag = Dag()
    dag.add("split", "split")
    dag.add("join", "piece", {"i": 9}, after=["split"])
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "failed"
    job = client.job(dag.job_id("split"))
    assert job is not None and job["state"] == "dead" and job["attempts"] == 2
    assert "the fan-out changed on retry" in str(job["error"])
    assert {"fewer": "has 2 of them", "params": "part1 was added", "stage": "part2 was added"}[
        change
    ] in str(job["error"])
    d = client.dag(dag.id)
    assert d is not None and d["total"] == 5  # the first plan's three parts, nothing more


def test_a_job_that_fanned_out_comes_back_from_the_dead_letter_queue_and_completes(
    client: Client, broker: Broker, registry: Registry
) -> None:
    """Attempts start again from 0 on a retry from the dead-letter queue; its fan-out is
    still recognised as the earlier run's (not a name clash), and each part runs once."""
    runs: Counter[str] = Counter()
    tries: list[int] = []

    @stage("split", registry=registry, attempts=1)
    def split(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        sub = ctx.new_children()
        for i in range(2):
            sub.add(f"part{i}", "piece", {"i": i})
        tries.append(int(ctx.add_children(sub)))
        if len(tries) == 1:
            raise RuntimeError("failed after the fan-out")
        return 2

    @stage("piece", registry=registry)
    def piece(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        runs[ctx.job.name] += 1
        return int(params["i"])

    dag = Dag()
    dag.add("split", "split")
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "failed"
    client.retry_dead(dag.job_id("split"))
    assert run_dag(client, broker, dag.id) == "completed"
    assert tries == [2, 2]
    assert runs == {"part0": 1, "part1": 1}


def test_a_child_name_another_job_already_uses_is_still_refused(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _noop(registry)
    dag = Dag()
    dag.add("taken", "noop")
    dag.add("fan", "noop")
    client.submit(dag)
    jobs, _ = broker.claim(["default"], 2)
    fan = next(j for j in jobs if j.name == "fan")
    sub = Dag(dag.id)
    sub.add("taken", "noop")
    with pytest.raises(PermanentError, match="already exists"):
        broker.add_children(fan, sub)


# -- the dead-letter queue -----------------------------------------------------------


def test_retry_all_dead_retries_each_job_that_was_dead_once_while_workers_run(
    client: Client, broker: Broker, registry: Registry
) -> None:
    runs: Counter[str] = Counter()

    @stage("poison", registry=registry, attempts=1)
    def poison(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        runs[ctx.job_id] += 1
        raise RuntimeError("always fails")

    dags = []
    for _ in range(3):
        d = Dag()
        d.add("p", "poison")
        dags.append(d)
    client.submit_many(dags)
    for d in dags:
        assert run_dag(client, broker, d.id) == "failed"
    assert len(client.dead()) == 3

    # Workers keep running (and killing the retried jobs again) while the loop runs.
    stop = threading.Event()
    runners = [
        InlineRunner(
            Broker(client.redis, namespace=client.keys.namespace, registry=registry), idle_wait=0.01
        )
        for _ in range(2)
    ]
    threads = [threading.Thread(target=ru.run, args=(stop.is_set,)) for ru in runners]
    for t in threads:
        t.start()
    try:
        retried = client.retry_all_dead()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(client.dag_state(d.id) != "failed" for d in dags):
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert retried == 3
    assert runs == {d.job_id("p"): 2 for d in dags}


# -- FIFO ----------------------------------------------------------------------------


def _one_job_dags(client: Client, n: int, **opts: Any) -> list[Dag]:
    _noop(client.registry)
    out = []
    for _ in range(n):
        d = Dag()
        d.add("j", "noop", options=JobOptions(**opts))
        client.submit(d)
        out.append(d)
    return out


def _claim_order(broker: Broker, n: int) -> list[str]:
    order = []
    for _ in range(n):
        (job,), _ = broker.claim(["default"])
        order.append(job.dag_id)
    return order


def test_a_released_job_keeps_its_place_before_jobs_submitted_after_it(
    client: Client, broker: Broker
) -> None:
    a, b = _one_job_dags(client, 2)
    (job,), _ = broker.claim(["default"])
    assert job.dag_id == a.id
    c, d = _one_job_dags(client, 2)
    assert broker.release([job]) == 1
    assert _claim_order(broker, 4) == [a.id, b.id, c.id, d.id]


def test_a_reclaimed_job_keeps_its_place_before_jobs_submitted_after_it(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    short = Broker(r, namespace=namespace, registry=registry, lease=0.2)
    a, b = _one_job_dags(client, 2, attempts=3)
    (job,), _ = short.claim(["default"])
    assert job.dag_id == a.id
    c = _one_job_dags(client, 1)[0]
    time.sleep(0.3)
    assert short.reclaim_stalled(["default"]) == [job.id]
    assert _claim_order(short, 3) == [a.id, b.id, c.id]


def test_a_higher_priority_still_goes_first_after_a_release(client: Client, broker: Broker) -> None:
    (a,) = _one_job_dags(client, 1)
    (job,), _ = broker.claim(["default"])
    (urgent,) = _one_job_dags(client, 1, priority=5)
    broker.release([job])
    assert _claim_order(broker, 2) == [urgent.id, a.id]
