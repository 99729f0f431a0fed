"""A DAG submitted with a webhook: the transition that closes it creates the delivery job.

Each test ends a DAG through one closing path (a completion, a death, a cancel, an
abandoned build closed by retention) and looks at Redis as soon as that one call returns:
the delivery DAG is there, its job waiting in its queue with the event and the roots'
results, or nothing at all for a DAG without a webhook.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mediajobs.json_documents import dag as dag_document
from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import PermanentError, SubmissionError
from pipeline.model import Dag
from pipeline.registry import Registry, stage
from pipeline.replies import as_str
from pipeline.retention import Retention
from pipeline.scripts import REQUEST_ID
from pipeline.submission import encode_batch, encode_jobs, encode_meta, encode_webhook
from pipeline.webhooks import check_url, service_name
from tests.helpers import run_dag

HOOK = "https://hooks.example.com/mediapipe?token=abc"


@pytest.fixture
def steps(registry: Registry) -> Registry:
    @stage("w.echo", registry=registry)
    def echo(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        return {"name": ctx.job.name, "inputs": sorted(inputs)}

    @stage("w.boom", registry=registry, attempts=1)
    def boom(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        if params.get("flag") and ctx.job.attempt > 1:
            return None
        raise PermanentError("the input is broken")

    return registry


def _event_of(client: Client, dag_id: str) -> str | None:
    v = client.redis.hget(client.keys.dag(dag_id), "webhook_event")
    return as_str(v) if v else None


def _delivery(client: Client, event_id: str) -> dict[str, Any]:
    job = client.job(f"{event_id}/deliver")
    assert job is not None, f"no delivery job for {event_id}"
    return job


def _in_wait(client: Client, job_id: str, queue: str = "default") -> bool:
    return client.redis.zscore(client.keys.wait(queue), job_id) is not None


def test_the_completion_that_closes_the_dag_creates_the_delivery_job(
    client: Client, broker: Broker, steps: Registry
) -> None:
    dag = Dag(webhook=HOOK, meta={"input": "a.jpg"})
    dag.add("a", "w.echo")
    dag.add("root", "w.echo", after=["a"])
    client.submit(dag)
    (a,), _ = broker.claim(["default"])
    broker.complete(a, {"name": "a"})
    assert _event_of(client, dag.id) is None  # still open: nothing announced
    (root,), _ = broker.claim(["default"])
    broker.complete(root, {"manifest": {"path": "/out/a/manifest.json"}, "outputs": []})

    # Nothing ran in between: the completion's own transition wrote all of this.
    event = _event_of(client, dag.id)
    assert event is not None and event.startswith("wh-")
    assert client.dag_state(event) == "running"
    shown = client.dag(dag.id)
    assert shown is not None and dag_document(shown, 0)["webhook_event"] == event  # status --json
    job = _delivery(client, event)
    assert job["state"] == "waiting" and job["stage"] == "webhook"
    assert _in_wait(client, job["id"])
    params = job["params"]
    assert params["url"] == HOOK and params["service"] == "webhook:hooks.example.com"
    assert params["event"]["id"] == event and params["event"]["type"] == "dag.completed"
    assert params["event"]["dag"]["id"] == dag.id and params["event"]["dag"]["total"] == 2
    assert json.loads(params["meta"])["input"] == "a.jpg"
    # The root's result reaches the delivery job as a child's result reaches a parent.
    (claimed,), _ = broker.claim(["default"])
    assert claimed.id == job["id"]
    assert claimed.inputs == {"root": {"manifest": {"path": "/out/a/manifest.json"}, "outputs": []}}
    assert claimed.max_attempts == 10 and claimed.backoff.base == 5.0


@pytest.mark.parametrize("how", ["submit", "submit_many"])
def test_a_one_job_dag_announces_its_completion(
    client: Client, broker: Broker, steps: Registry, how: str
) -> None:
    # A one-job DAG runs quietly, and one with neither a webhook nor an idempotency key
    # is closed without reading its hash (settle_plain): the webhook must keep it off
    # that path, whichever way it was submitted.
    dag = Dag(webhook=HOOK)
    dag.add("only", "w.echo")
    client.submit(dag) if how == "submit" else client.submit_many([dag])
    (job,), _ = broker.claim(["default"])
    assert broker.complete(job, {"name": "only"})[0]
    event = _event_of(client, dag.id)
    assert event is not None and client.dag_state(dag.id) == "completed"
    params = _delivery(client, event)["params"]
    assert params["event"]["type"] == "dag.completed" and params["event"]["dag"]["id"] == dag.id


def test_a_dag_without_a_webhook_writes_nothing_more(
    client: Client, broker: Broker, steps: Registry
) -> None:
    dag = Dag()
    dag.add("only", "w.echo")
    client.submit(dag)
    before = set(client.redis.scan_iter(match=client.keys.pattern()))
    assert run_dag(client, broker, dag.id) == "completed"
    assert _event_of(client, dag.id) is None
    after = set(client.redis.scan_iter(match=client.keys.pattern()))
    assert not [k for k in after - before if b"wh-" in k]
    assert client.redis.hget(client.keys.dag(dag.id), "webhook") is None


def test_a_death_that_fails_the_dag_announces_dag_failed_with_the_roots_errors(
    client: Client, broker: Broker, steps: Registry
) -> None:
    dag = Dag(webhook=HOOK)
    dag.add("bad", "w.boom")
    dag.add("root", "w.echo", after=["bad"])
    client.submit(dag)
    (bad,), _ = broker.claim(["default"])
    assert broker.fail(bad, PermanentError("the input is broken")) == "dead"
    event = _event_of(client, dag.id)
    assert event is not None and client.dag_state(dag.id) == "failed"
    job = _delivery(client, event)
    assert job["params"]["event"]["type"] == "dag.failed"
    assert job["params"]["event"]["dag"]["dead"] == 1
    assert job["params"]["event"]["dag"]["upstream_failed"] == 1
    (claimed,), _ = broker.claim(["default"])
    assert claimed.inputs == {}
    assert claimed.failures["root"]["type"] == "UpstreamFailed"


def test_a_cancel_announces_dag_cancelled(client: Client, steps: Registry) -> None:
    dag = Dag(webhook=HOOK)
    dag.add("a", "w.echo")
    client.submit(dag)
    client.cancel(dag.id)
    event = _event_of(client, dag.id)
    assert event is not None
    assert _delivery(client, event)["params"]["event"]["type"] == "dag.cancelled"


def test_a_dag_reopened_from_the_dead_letter_queue_announces_again_with_a_new_id(
    client: Client, broker: Broker, steps: Registry
) -> None:
    dag = Dag(webhook=HOOK)
    dag.add("x", "w.boom", {"flag": True})
    client.submit(dag)
    (x,), _ = broker.claim(["default"])
    broker.fail(x, PermanentError("broken"))
    first = _event_of(client, dag.id)
    assert first is not None
    client.retry_dead(dag.job_id("x"))
    assert client.dag_state(dag.id) == "running"
    jobs, _ = broker.claim(["default"], count=5)
    for j in jobs:
        broker.complete(j, None)  # the first delivery and the retried job
    second = _event_of(client, dag.id)
    assert second is not None and second != first
    assert _delivery(client, first)["params"]["event"]["type"] == "dag.failed"
    assert _delivery(client, second)["params"]["event"]["type"] == "dag.completed"
    # The delivery DAG closing announces nothing itself.
    assert _event_of(client, first) is None


def test_retention_closing_an_abandoned_build_announces_it(client: Client, steps: Registry) -> None:
    dag = Dag(webhook=HOOK)
    dag.add("a", "w.echo")
    jobs = encode_jobs(dag, steps)
    hook = encode_webhook(dag, jobs, steps)
    client._run(
        "submit_dag", dag.id, "", encode_meta({}), encode_batch(jobs), REQUEST_ID, "begin", hook
    )
    assert client.dag_state(dag.id) == "building"
    client.prune(Retention(building_age=0.0))
    assert client.dag_state(dag.id) == "cancelled"
    event = _event_of(client, dag.id)
    assert event is not None
    assert _delivery(client, event)["params"]["event"]["type"] == "dag.cancelled"


def test_submit_many_keeps_each_dags_webhook(client: Client, steps: Registry) -> None:
    with_hook, without = Dag(webhook=HOOK), Dag()
    for d in (with_hook, without):
        d.add("a", "w.echo")
    client.submit_many([with_hook, without])
    spec = client.dag(with_hook.id)
    assert spec is not None and json.loads(spec["webhook"])["url"] == HOOK
    assert "webhook" not in (client.dag(without.id) or {})


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "https://user:pw@example.com/",
        "https:///nohost",
        "https://example.com/a b",
        "gopher://example.com",
    ],
)
def test_a_webhook_url_other_than_plain_http_or_https_is_refused_at_submit(
    client: Client, steps: Registry, url: str
) -> None:
    dag = Dag(webhook=url)
    dag.add("a", "w.echo")
    with pytest.raises(SubmissionError, match="webhook URL"):
        client.submit(dag)
    assert client.dag_state(dag.id) is None


def test_the_breaker_is_per_host_and_port() -> None:
    assert service_name("https://A.example.com/x?y") == "webhook:a.example.com"
    assert service_name("http://127.0.0.1:8080/hook") == "webhook:127.0.0.1:8080"
    assert check_url("http://[::1]:9/x") == "http://[::1]:9/x"
