"""Submit-time validation, atomicity and idempotency."""

from __future__ import annotations

import math
from typing import Any

import pytest
import redis

from pipeline.client import Client
from pipeline.errors import SubmissionError
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.registry import Registry, stage


@pytest.fixture
def known(registry: Registry) -> Registry:
    @stage("probe", registry=registry)
    def probe(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None: ...

    return registry


def _namespace_keys(r: redis.Redis, namespace: str) -> list[bytes]:
    return list(r.scan_iter(match=Keys(namespace).pattern()))


def _unknown_stage() -> Dag:
    d = Dag()
    d.add("a", "probe")
    d.add("b", "transcode", after=["a"])
    return d


def _not_json() -> Dag:
    d = Dag()
    d.add("a", "probe", {"when": object()})
    return d


def _nan() -> Dag:
    d = Dag()
    d.add("a", "probe", {"x": math.nan})
    return d


def _cycle() -> Dag:
    d = Dag()
    d.add("a", "probe", after=["c"])
    d.add("b", "probe", after=["a"])
    d.add("c", "probe", after=["b"])
    d.add("z", "probe")
    return d


def _missing() -> Dag:
    d = Dag()
    d.add("a", "probe", after=["ghost"])
    return d


def _empty() -> Dag:
    return Dag()


def _bad_queue() -> Dag:
    d = Dag()
    d.add("a", "probe", queue="bad queue:x")
    return d


def _hostile_queue() -> Dag:
    d = Dag()
    d.add("a", "probe", queue='q\n"x"')
    return d


def _bad_priority() -> Dag:
    d = Dag()
    d.add("a", "probe", priority=5000)
    return d


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_unknown_stage, "job 'b': unknown stage 'transcode' (known: probe)"),
        (_not_json, "job 'a' params are not JSON-serialisable"),
        (_nan, "job 'a' params are not JSON-serialisable: Out of range float values"),
        (_cycle, "DAG has a cycle through: a, b, c"),
        (_missing, "job 'a' depends on 'ghost', which is not in the DAG"),
        (_empty, "has no jobs"),
        (_bad_priority, "priority 5000 outside -1000..1000"),
        (_bad_queue, 'invalid queue "bad queue:x"'),
        (_hostile_queue, 'invalid queue "q??x?"'),
    ],
)
def test_bad_submissions_are_rejected_with_a_clear_message_and_write_nothing(
    r: redis.Redis,
    namespace: str,
    client: Client,
    known: Registry,
    build: Any,
    message: str,
) -> None:
    with pytest.raises(SubmissionError) as info:
        client.submit(build())
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert _namespace_keys(r, namespace) == []


def test_duplicate_and_invalid_names_are_rejected_when_built(known: Registry) -> None:
    d = Dag()
    d.add("a", "probe")
    with pytest.raises(SubmissionError, match="duplicate job name 'a'"):
        d.add("a", "probe")
    with pytest.raises(SubmissionError, match="invalid job name"):
        d.add("x/y", "probe")


def test_same_idempotency_key_returns_the_existing_dag(
    r: redis.Redis, namespace: str, client: Client, known: Registry
) -> None:
    first = Dag(idempotency_key="sha256:abc|preset:image")
    first.add("a", "probe", {"path": "x.jpg"})
    again = Dag(idempotency_key="sha256:abc|preset:image")
    again.add("a", "probe", {"path": "x.jpg"})
    s1, s2 = client.submit(first), client.submit(again)
    assert s1.created and not s2.created
    assert s2.dag_id == first.id
    assert client.dag(again.id) is None
    assert client.queue_counts("default")["waiting"] == 1


def test_submitting_the_same_dag_id_twice_is_refused(client: Client, known: Registry) -> None:
    d = Dag("fixed-id")
    d.add("a", "probe")
    client.submit(d)
    with pytest.raises(SubmissionError, match="already exists"):
        client.submit(d)


def test_submit_many_names_each_dag_in_order_among_idempotent_hits(
    client: Client, known: Registry
) -> None:
    # A call's reply mixes 1 (written under its own id) with [existing id, 0] for a DAG
    # whose idempotency key names one already there: each answer goes to its own DAG.
    first = Dag(idempotency_key="clip-1")
    first.add("a", "probe")
    client.submit(first)
    dags = []
    for i in range(5):
        d = Dag(idempotency_key="clip-1" if i in (1, 3) else None)
        d.add("a", "probe", {"i": i})
        dags.append(d)
    out = client.submit_many(dags)
    assert [(s.dag_id, s.created) for s in out] == [
        (dags[0].id, True),
        (first.id, False),
        (dags[2].id, True),
        (first.id, False),
        (dags[4].id, True),
    ]
    assert client.queue_counts("default")["waiting"] == 4


def test_submit_many_writes_each_dag(client: Client, known: Registry) -> None:
    dags = []
    for i in range(1200):
        d = Dag()
        d.add("a", "probe", {"i": i})
        dags.append(d)
    out = client.submit_many(dags)
    assert len(out) == 1200 and all(s.created for s in out)
    assert client.queue_counts("default")["waiting"] == 1200
