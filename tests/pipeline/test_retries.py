"""Retries with backoff, the dead-letter queue, and retrying from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import PermanentError, RetryableError
from pipeline.model import Backoff, BackoffKind, Dag
from pipeline.registry import Registry, stage
from tests.helpers import run_dag


def test_backoff_schedule_is_exponential_and_capped() -> None:
    b = Backoff(BackoffKind.EXPONENTIAL, base=1.0, cap=5.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    f = Backoff(BackoffKind.FIXED, base=3.0, jitter=0.0)
    assert [f.delay(n) for n in range(1, 4)] == [3.0, 3.0, 3.0]
    j = Backoff(base=10.0, cap=100.0, jitter=0.2)
    delays = [j.delay(1) for _ in range(200)]
    assert min(delays) >= 8.0 and max(delays) <= 12.0 and len(set(delays)) > 100


def test_observed_retry_delays_follow_the_exponential_schedule(
    client: Client, broker: Broker, registry: Registry
) -> None:
    @stage(
        "flaky",
        registry=registry,
        attempts=4,
        backoff=Backoff(BackoffKind.EXPONENTIAL, base=0.2, cap=10.0, jitter=0.0),
    )
    def flaky(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        if ctx.attempt < 4:
            raise RetryableError(f"transient failure {ctx.attempt}")
        return ctx.attempt

    dag = Dag()
    dag.add("f", "flaky")
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "completed"

    events = list(client.events(dag.id))
    failed = [e.timestamp_ms for e in events if e.type == "failed"]
    started = [e.timestamp_ms for e in events if e.type == "active"]
    assert len(failed) == 3 and len(started) == 4
    observed = [(s - f) / 1000 for f, s in zip(failed, started[1:], strict=True)]
    for got, want in zip(observed, [0.2, 0.4, 0.8], strict=True):
        assert want - 0.005 <= got <= want + 0.25, (observed, want)
    job = client.job(dag.job_id("f"))
    assert job is not None and job["attempts"] == 4 and job["result"] == 4


def test_a_delayed_retry_does_not_run_early(
    client: Client, broker: Broker, registry: Registry
) -> None:
    @stage(
        "once",
        registry=registry,
        attempts=2,
        backoff=Backoff(BackoffKind.FIXED, base=30.0, jitter=0.0),
    )
    def once(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        raise RetryableError("later")

    dag = Dag()
    dag.add("x", "once")
    client.submit(dag)
    jobs, _ = broker.claim(["default"])
    assert broker.fail(jobs[0], RetryableError("later")) == "retry"
    again, wake = broker.claim(["default"])
    assert again == []
    assert 29.0 < wake <= 30.0
    assert client.queue_counts("default")["delayed"] == 1


def test_permanent_error_goes_straight_to_the_dead_letter_queue_with_context(
    client: Client, broker: Broker, registry: Registry
) -> None:
    @stage("corrupt", registry=registry, attempts=5)
    def corrupt(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        raise PermanentError(f"{params['path']}: not a JPEG file")

    dag = Dag()
    dag.add("c", "corrupt", {"path": "in.jpg"})
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "failed"

    dead = client.dead()
    assert [d["id"] for d in dead] == [dag.job_id("c")]
    entry = dead[0]
    assert entry["attempts"] == 1
    assert entry["params"] == {"path": "in.jpg"}
    err = entry["error"]
    assert err["type"] == "PermanentError"
    assert err["message"] == "in.jpg: not a JPEG file"
    assert "Traceback" in err["traceback"] and "corrupt" in err["traceback"]
    assert err["worker"] == broker.worker_id
    assert int(entry["started"]) <= int(entry["finished"])


def test_retries_exhausted_end_in_the_dead_letter_queue(
    client: Client, broker: Broker, registry: Registry
) -> None:
    @stage(
        "always",
        registry=registry,
        attempts=3,
        backoff=Backoff(BackoffKind.FIXED, base=0.01, jitter=0.0),
    )
    def always(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        raise ValueError("bug")

    dag = Dag()
    dag.add("a", "always")
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "failed"
    job = client.job(dag.job_id("a"))
    assert job is not None and job["state"] == "dead" and job["attempts"] == 3
    assert job["error"]["type"] == "ValueError"


def test_retrying_from_the_dead_letter_queue_completes_the_dag(
    client: Client, broker: Broker, registry: Registry, tmp_path: Path
) -> None:
    source = tmp_path / "input.txt"

    @stage("read", registry=registry, attempts=2)
    def read(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
        path = Path(params["path"])
        if not path.exists():
            raise PermanentError(f"{path}: no such file")
        return path.read_text()

    @stage("upper", registry=registry)
    def upper(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
        return str(inputs["read"]).upper()

    dag = Dag()
    dag.add("read", "read", {"path": str(source)})
    dag.add("upper", "upper", after=["read"])
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "failed"
    assert client.jobs(dag.id)["upper"]["state"] == "upstream_failed"

    source.write_text("restored")
    client.retry_dead(dag.job_id("read"))
    assert client.dead() == []
    assert client.dag_state(dag.id) == "running"
    assert run_dag(client, broker, dag.id) == "completed"
    assert client.job(dag.job_id("upper"))["result"] == "RESTORED"  # type: ignore[index]
    info = client.dag(dag.id)
    assert info is not None and (info["dead"], info["upstream"], info["completed"]) == (0, 0, 2)


def test_retrying_a_job_not_in_the_dead_letter_queue_is_refused(client: Client) -> None:
    from pipeline.errors import SubmissionError

    with pytest.raises(SubmissionError, match="not in the dead-letter queue"):
        client.retry_dead("nope/none")
