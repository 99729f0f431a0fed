"""A one-job DAG with its options at their usual values goes to ``submit_one`` as
arguments instead of to ``submit_dag`` as JSON. It must store what submit_dag stores,
key for key and field for field, refuse what submit_dag refuses with the same message,
and write nothing when it refuses.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline import client as client_module
from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import SubmissionError
from pipeline.keys import Keys
from pipeline.model import Backoff, Dag, EdgePolicy, JobOptions
from pipeline.registry import Registry, stage
from pipeline.scripts import REQUEST_ID
from pipeline.submission import PLAIN_JOB, PlainJobs, encode_jobs
from tests.helpers import run_dag, server_without_functions

HOOK = "https://hooks.example.com/mediapipe?token=abc"


def _stages(registry: Registry) -> None:
    @stage("work", registry=registry)
    def work(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        return {"got": params}

    @stage("stalls", registry=registry, max_stalls=2)
    def stalls(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        return 1

    @stage("prefers_gpu", registry=registry, prefers=("gpu",))
    def prefers_gpu(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        return 1


def _general_only(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every DAG this client submits goes to submit_dag, as JSON."""
    monkeypatch.setattr(client_module, "submit_one_fields", lambda job: None)
    monkeypatch.setattr(client._plain, "of", lambda dag, registry: None)


@pytest.fixture
def other_namespace(r: redis.Redis) -> Iterator[str]:
    ns = "t" + uuid.uuid4().hex[:10]
    yield ns
    keys = list(r.scan_iter(match=Keys(ns).pattern(), count=1000))
    if keys:
        r.delete(*keys)


def _dump(r: redis.Redis, namespace: str, dag_id: str) -> dict[str, Any]:
    """Every key of the namespace and what it holds, with the DAG id, the namespace and
    the times of the call (its clock reading, its request id, stream entry ids) taken out."""
    prefix = Keys(namespace).prefix

    def norm(v: bytes | str) -> str:
        s = v.decode() if isinstance(v, bytes) else v
        return s.replace(dag_id, "D")

    out: dict[str, Any] = {}
    for raw in r.scan_iter(match=Keys(namespace).pattern()):
        key = raw.decode()
        kind = r.type(key).decode()
        value: Any
        if kind == "hash":
            value = {norm(f): norm(v) for f, v in r.hgetall(key).items()}
            for timed in ("created", "req"):
                if timed in value:
                    value[timed] = "<" + timed + ">"
        elif kind == "set":
            value = sorted(norm(m) for m in r.smembers(key))
        elif kind == "zset":
            value = [(norm(m), s) for m, s in r.zrange(key, 0, -1, withscores=True)]
        elif kind == "list":
            value = [norm(v) for v in r.lrange(key, 0, -1)]
        elif kind == "stream":
            value = [{norm(f): norm(v) for f, v in e.items()} for _, e in r.xrange(key)]
        else:
            value = norm(r.get(key) or b"")
        out[norm(key.removeprefix(prefix))] = (kind, value, r.pttl(key) > 0)
    return out


def _one_job(variant: str) -> Dag:
    meta: dict[str, Any] = {"input": "a.jpg"}
    if variant == "long meta":
        meta["note"] = "m" * 500  # kept in pieces (put_long)
    dag = Dag(
        idempotency_key=f"upload-{uuid.uuid4().hex}" if variant == "idempotency key" else None,
        meta=meta,
        webhook=HOOK if variant == "webhook" else None,
    )
    params: dict[str, Any] = {"path": "in.jpg", "w": 320}
    if variant == "long params":
        params["blob"] = "p" * 3000
    queue = "fast.lane" if variant == "own queue" else None
    dag.add("thumb", "work", params, queue=queue)
    return dag


VARIANTS = ["plain", "idempotency key", "webhook", "long params", "long meta", "own queue"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_submit_one_stores_what_submit_dag_stores(
    variant: str,
    r: redis.Redis,
    namespace: str,
    other_namespace: str,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _stages(registry)
    monkeypatch.setattr("pipeline.submission.time.time", lambda: 1796000000.25)
    sent: list[str] = []
    fast = Client(r, namespace=namespace, registry=registry)
    general = Client(r, namespace=other_namespace, registry=registry)
    for c in (fast, general):
        run = c.scripts.run
        c.scripts.run = lambda name, *a, _run=run: sent.append(name) or _run(name, *a)  # type: ignore[method-assign]
    a, b = _one_job(variant), _one_job(variant)
    b.idempotency_key = a.idempotency_key and a.idempotency_key + "-b"
    assert fast.submit(a).created
    _general_only(general, monkeypatch)
    assert general.submit(b).created
    assert sent == ["submit_one", "submit_dag"]
    mine, theirs = _dump(r, namespace, a.id), _dump(r, other_namespace, b.id)
    if variant == "idempotency key":  # its key's name holds the key itself
        theirs = {k.replace("-b", ""): v for k, v in theirs.items()}
        theirs["dag:D"][1]["idem"] = theirs["dag:D"][1]["idem"].replace("-b", "")
    assert mine == theirs
    assert "job:D/thumb" in mine and "events" in mine  # the dump saw the writes
    # And it runs as any DAG does, its events read back as submit_dag's are.
    broker = Broker(r, namespace=namespace, registry=registry, lease=5.0)
    assert run_dag(fast, broker, a.id, queues=(a.nodes["thumb"].options.queue or "default",)) == (
        "completed"
    )
    done = fast.job(a.job_id("thumb"))
    assert done is not None and done["result"] == {"got": a.nodes["thumb"].params}
    assert [e.type for e in fast.events(a.id)] == [
        "submitted",
        "active",
        "completed",
        "dag_completed",
    ]


@pytest.mark.parametrize(
    ("how", "path"),
    [
        ({}, "submit_one"),
        ({"attempts": 7, "timeout": 12.5}, "submit_one"),
        ({"priority": 5}, "submit_dag"),
        ({"delay": 30}, "submit_dag"),
        ({"run_at": 4102444800.0}, "submit_dag"),
        ({"cost": 2}, "submit_dag"),
        ({"tags": ("nvenc",)}, "submit_dag"),
        ({"backoff": Backoff(base=0.5)}, "submit_dag"),
        ({"stage": "stalls"}, "submit_dag"),  # a stall limit from its stage
        ({"stage": "prefers_gpu"}, "submit_one"),  # no live worker has the capability
        ({"stage": "prefers_gpu", "gpu worker": True}, "submit_dag"),  # `fallback` set
        ({"attempts": True}, "submit_dag"),  # JSON's true, which submit_dag refuses
        ({"second job": True}, "submit_dag"),
    ],
)
def test_only_a_job_at_its_usual_options_goes_to_submit_one(
    how: dict[str, Any], path: str, r: redis.Redis, client: Client, registry: Registry
) -> None:
    _stages(registry)
    how = dict(how)
    if how.pop("gpu worker", False):  # a live worker's registration, as its beat writes it
        keys = client.keys
        r.zadd(keys.workers, {"w1": 4102444800000})
        r.hset(keys.worker("w1"), "queues", "default@gpu")
    dag = Dag()
    name = how.pop("stage", "work")
    second = how.pop("second job", False)
    dag.add("a", name, {"x": 1}, **how)
    if second:
        dag.add("b", "work", after=["a"])
    sent: list[str] = []
    run = client.scripts.run
    client.scripts.run = lambda n, *a: sent.append(n) or run(n, *a)  # type: ignore[method-assign]
    if how.get("attempts") is True:
        with pytest.raises(SubmissionError, match="bad max_attempts"):
            client.submit(dag)
        assert sent == [path]
        return
    assert client.submit(dag).created
    assert sent == [path]
    job = client.job(dag.job_id("a"))
    assert job is not None
    assert int(job["max_attempts"]) == how.get("attempts", 3)
    assert int(job["timeout_ms"]) == int(how.get("timeout", 3600.0) * 1000)


def _send_one(client: Client, dag_id: str, **fields: str) -> Any:
    args = {"name": "a", "stage": "work", "queue": "default", "params": "{}", "attempts": "3",
            "timeout": "3600000", **fields}  # fmt: skip
    return client.scripts.run(
        "submit_one", client.keys.prefix, dag_id, "", "{}", REQUEST_ID, "",
        args["name"], args["stage"], args["queue"], args["params"], args["attempts"],
        args["timeout"],
    )  # fmt: skip


def _send_dag(client: Client, dag_id: str, **fields: str) -> Any:
    job: dict[str, Any] = {"id": f"{dag_id}/{fields.get('name', 'a')}", "name": "a",
                           "stage": "work", "queue": "default", "params": "{}",
                           "max_attempts": 3, "timeout_ms": 3600000, "root": 1}  # fmt: skip
    for k, v in fields.items():
        field = {"attempts": "max_attempts", "timeout": "timeout_ms"}.get(k, k)
        job[field] = json.loads(v) if field in ("max_attempts", "timeout_ms") else v
    return client.scripts.run(
        "submit_dag", client.keys.prefix, dag_id, "", "{}", json.dumps([job]), REQUEST_ID
    )


CRAFTED = [
    ("d1:jobs", {}),
    ("d{x}", {}),
    ("d" * 65, {}),
    ("ok", {"name": "a:deps"}),
    ("ok", {"name": ""}),
    ("ok", {"name": "n" * 129}),
    ("ok", {"stage": ""}),
    ("ok", {"queue": ""}),
    ("ok", {"queue": "a b"}),
    ("ok", {"queue": "q:wait"}),
    ("ok", {"queue": "q" * 201}),
    ("ok", {"attempts": "0"}),
    ("ok", {"attempts": "-2"}),
    ("ok", {"timeout": "-1"}),
]


@pytest.mark.parametrize(("dag_id", "fields"), CRAFTED)
def test_a_crafted_submit_one_is_refused_as_submit_dag_refuses_it_and_leaves_no_key(
    dag_id: str, fields: dict[str, str], r: redis.Redis, namespace: str, client: Client
) -> None:
    with pytest.raises(redis.ResponseError) as one:
        _send_one(client, dag_id, **fields)
    assert list(r.scan_iter(match=Keys(namespace).pattern())) == []
    with pytest.raises(redis.ResponseError) as general:
        _send_dag(client, dag_id, **fields)
    assert str(one.value) == str(general.value)
    assert "refused" in str(one.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"attempts": "many"},
        {"attempts": "0x10"},  # tonumber would take these three; no JSON number is one
        {"attempts": " 3"},
        {"attempts": "3e0"},
        {"attempts": "2.5"},  # the client sends whole numbers only (else: submit_dag)
        {"attempts": ""},
        {"timeout": "soon"},
        {"timeout": "-5"},
    ],
)
def test_numbers_that_are_not_whole_numbers_are_refused_and_leave_no_key(
    fields: dict[str, str], r: redis.Redis, namespace: str, client: Client
) -> None:
    field = "max_attempts" if "attempts" in fields else "timeout_ms"
    with pytest.raises(redis.ResponseError) as refused:
        _send_one(client, "ok", **fields)
    assert str(refused.value) == f"DAG ok refused: job ok/a: bad {field}"
    assert list(r.scan_iter(match=Keys(namespace).pattern())) == []


def test_a_call_cut_short_is_refused_not_answered_as_written(
    r: redis.Redis, namespace: str, client: Client
) -> None:
    with pytest.raises(redis.ResponseError, match="DAG d refused: invalid job name nil"):
        client.scripts.run("submit_one", client.keys.prefix, "d", "", "{}")
    assert list(r.scan_iter(match=Keys(namespace).pattern())) == []


def test_the_same_dag_twice_is_refused_and_an_idempotent_one_is_found(
    client: Client, registry: Registry
) -> None:
    _stages(registry)
    dag = Dag()
    dag.add("a", "work")
    assert client.submit(dag).created
    with pytest.raises(SubmissionError, match=f"DAG {dag.id} already exists"):
        client.submit(dag)
    first = Dag(idempotency_key="upload-7")
    first.add("a", "work")
    again = Dag(idempotency_key="upload-7")
    again.add("a", "work")
    assert client.submit(first).created
    found = client.submit(again)
    assert (found.dag_id, found.created) == (first.id, False)
    assert client.queue_counts("default")["waiting"] == 2


def test_a_one_job_dag_sent_twice_with_one_request_id_is_written_once(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    """A resend (its reply was lost) carries the first send's request id: the DAG hash
    answers it, however the connection was lost."""
    _stages(registry)
    dag = Dag()
    dag.add("a", "work", {"n": 1})
    (job,) = encode_jobs(dag, registry)
    args = (dag.id, "", "{}", "me:1", "", "a", "work", "default", job["params"], "3", "3600000")
    assert client.scripts.run("submit_one", client.keys.prefix, *args) == 1
    assert client.scripts.run("submit_one", client.keys.prefix, *args) == 1
    keys = Keys(namespace)
    assert r.zcard(keys.wait("default")) == 1
    assert [e.type for e in client.events(dag.id)] == ["submitted"]
    assert r.xlen(keys.events) == 1


def test_submit_one_runs_as_a_script_where_the_server_has_no_functions(
    tmp_path: Path, registry: Registry
) -> None:
    """Redis 6.2 (here: FUNCTION renamed away) runs each transition as its own script
    through EVALSHA: submit_one's includes must be whole there too."""
    _stages(registry)
    with server_without_functions(tmp_path) as r:
        client = Client(r, registry=registry)
        assert not client.scripts._functions
        dag = Dag(idempotency_key="once")
        dag.add("a", "work", {"n": 2})
        assert client.submit(dag).created
        broker = Broker(r, registry=registry, lease=5.0)
        assert run_dag(client, broker, dag.id) == "completed"
        done = client.job(dag.job_id("a"))
        assert done is not None and done["result"] == {"got": {"n": 2}}


def _noop(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
    return 1


DECLARED: list[dict[str, Any]] = [
    {},
    {"queue": "fast.lane", "attempts": 7, "timeout": 12.5},
    {"timeout": 0.0015},  # 1.5 ms: int() takes it to 1, as encode_node does
    {"timeout": 0},
    {"attempts": 0},  # refused by encode_node: the general path says why
    {"attempts": True},  # a bool: JSON's true, not a number
    {"cost": 2},
    {"cost": 0},
    {"tags": ("nvenc",)},
    {"backoff": Backoff(base=0.5)},
    {"max_stalls": 1},
    {"prefers": ("gpu",)},  # where it goes depends on live workers
]


@pytest.mark.parametrize("declared", DECLARED)
def test_the_plain_path_takes_from_a_declaration_what_encode_node_writes(
    declared: dict[str, Any],
) -> None:
    """PlainJobs.of sends a one-job DAG to submit_one with the queue, attempts and timeout
    that encode_jobs would have written, and only where that job has nothing else."""
    reg = Registry()
    stage("s", registry=reg, **declared)(_noop)
    dag = Dag()
    dag.add("a", "s", {"x": 1})
    got = PlainJobs().of(dag, reg)
    try:
        (job,) = encode_jobs(dag, reg)
    except SubmissionError:
        assert got is None
        return
    plain = (
        job.keys() <= PLAIN_JOB
        and type(job["max_attempts"]) is int
        and type(job["timeout_ms"]) is int
        and not declared.get("prefers")
    )
    if not plain:
        assert got is None
        return
    assert got is not None
    node, queue, attempts, timeout = got
    assert node is dag.nodes["a"]
    assert (queue, attempts, timeout) == (
        job["queue"], str(job["max_attempts"]), str(job["timeout_ms"])
    )  # fmt: skip


def test_only_a_lone_job_without_options_or_webhook_takes_the_plain_path(
    registry: Registry,
) -> None:
    _stages(registry)
    plain = PlainJobs()

    def one(**options: Any) -> Dag:
        dag = Dag()
        dag.add("a", "work", **options)
        return dag

    assert plain.of(one(), registry) is not None
    assert plain.of(one(options=JobOptions()), registry) is not None  # equal to the defaults
    assert plain.of(one(priority=0, delay=0.0), registry) is not None
    assert plain.of(one(priority=1), registry) is None
    assert plain.of(one(queue="default"), registry) is None  # an option set, even to its value
    hooked = one()
    hooked.webhook = HOOK
    assert plain.of(hooked, registry) is None
    two = one()
    two.add("b", "work", after=["a"])
    assert plain.of(two, registry) is None
    looped = one()
    looped.nodes["a"].children["a"] = EdgePolicy.FAIL
    assert plain.of(looped, registry) is None  # the general path refuses the cycle
    unknown = Dag()
    unknown.add("a", "no-such-stage")
    assert plain.of(unknown, registry) is None


def test_a_stage_declared_again_is_read_again(
    r: redis.Redis, client: Client, registry: Registry
) -> None:
    """The plain path keeps what it worked out per declaration, not per stage name."""
    stage("s", registry=registry, attempts=3)(_noop)
    sent: list[str] = []
    run = client.scripts.run
    client.scripts.run = lambda n, *a: sent.append(n) or run(n, *a)  # type: ignore[method-assign]
    read = []
    for declared in ({"attempts": 3}, {"attempts": 5, "timeout": 2.0}, {"tags": ("nvenc",)}):
        stage("s", registry=registry, **declared)(_noop)
        dag = Dag()
        dag.add("a", "s")
        assert client.submit(dag).created
        job = client.job(dag.job_id("a"))
        assert job is not None
        read.append((int(job["max_attempts"]), int(job["timeout_ms"]), job["queue"]))
    assert read == [(3, 3600000, "default"), (5, 2000, "default"), (3, 3600000, "default@nvenc")]
    assert sent == ["submit_one", "submit_one", "submit_dag"]


def _refusal(c: Client, stage_name: str, bad: str, *, plain: bool) -> str:
    """What ``c`` says of a one-job DAG with a bad DAG id, params or meta; ``plain``:
    whether the plain path takes the DAG."""
    dag = Dag("d1", meta={"when": {1, 2}} if bad == "meta" else None)
    dag.add("a", stage_name, {"frames": {1, 2}} if bad == "params" else {})
    if bad == "dag id":
        dag.id = "no spaces here"
    assert (c._plain.of(dag, c.registry) is not None) is plain
    with pytest.raises(SubmissionError) as err:
        c.submit(dag)
    return str(err.value)


@pytest.mark.parametrize("bad", ["params", "dag id", "meta"])
def test_the_plain_path_refuses_what_the_general_path_refuses_with_its_message(
    bad: str,
    r: redis.Redis,
    namespace: str,
    client: Client,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _stages(registry)
    general = Client(r, namespace=namespace, registry=registry)
    _general_only(general, monkeypatch)
    said = _refusal(client, "work", bad, plain=True)
    assert said == _refusal(general, "work", bad, plain=False)
    assert ("DAG id" if bad == "dag id" else f"{bad} are not JSON-serialisable") in said
    assert not list(r.scan_iter(match=client.keys.pattern()))


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), None])
@pytest.mark.parametrize("bad", ["dag id", "params"])
def test_a_declaration_encode_node_cannot_take_leaves_the_refusal_to_the_general_path(
    timeout: Any,
    bad: str,
    r: redis.Redis,
    namespace: str,
    client: Client,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A timeout int() cannot take fails in encode_node after the DAG id's and the params'
    checks: the plain path must not raise it first."""
    stage("s", registry=registry, timeout=timeout)(_noop)
    general = Client(r, namespace=namespace, registry=registry)
    _general_only(general, monkeypatch)
    assert _refusal(client, "s", bad, plain=False) == _refusal(general, "s", bad, plain=False)


def test_what_redis_refuses_on_the_plain_path_is_a_submission_error(
    r: redis.Redis, client: Client, registry: Registry
) -> None:
    stage("s", registry=registry, queue="no spaces")(_noop)
    dag = Dag()
    dag.add("a", "s")
    assert client._plain.of(dag, registry) is not None
    with pytest.raises(SubmissionError, match='invalid queue "no spaces"'):
        client.submit(dag)
    assert not list(r.scan_iter(match=client.keys.pattern()))


def test_a_list_of_tags_changed_after_the_declaration_changes_nothing(
    client: Client, registry: Registry
) -> None:
    tags: list[str] = []
    stage("s", registry=registry, tags=tags, prefers=tags)(_noop)  # type: ignore[arg-type]
    tags.append("nvenc")
    assert registry.get("s").tags == () and registry.get("s").prefers == ()
    dag = Dag()
    dag.add("a", "s")
    assert client.submit(dag).created
    job = client.job(dag.job_id("a"))
    assert job is not None and job["queue"] == "default"


def test_the_plain_path_reads_the_registry_the_client_has_now(
    client: Client, registry: Registry
) -> None:
    stage("s", registry=registry, queue="q1")(_noop)
    first = Dag()
    first.add("a", "s")
    client.submit(first)
    other = Registry()
    stage("s", registry=other, queue="q2")(_noop)
    client.registry = other
    dag = Dag()
    dag.add("a", "s")
    assert client.submit(dag).created
    job = client.job(dag.job_id("a"))
    assert job is not None and job["queue"] == "q2"
