"""One home for what happens to a failed job: a pool child's failure, the inline runner's
and a lane's mean the same; the parent takes only plain data from a child."""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.workers.fault_stages  # noqa: F401  (registers the f.* stages)
from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import (
    BadInputError,
    JobTimeoutError,
    ServiceUnavailableError,
    ThrottledError,
)
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from tests.helpers import run_dag
from tests.workers.conftest import Workers, wait_for
from workers.outcomes import DEAD, DEFER, RETRY, THROTTLE, Failure


@pytest.mark.parametrize(
    ("exc", "action", "wait"),
    [
        (BadInputError("x.jpg: not an image"), DEAD, -1.0),
        (ThrottledError("429", retry_after=3.0), THROTTLE, 3.0),
        (ServiceUnavailableError("s3 down"), DEFER, -1.0),
        (JobTimeoutError("slow"), RETRY, -1.0),
        (RuntimeError("bug"), RETRY, -1.0),
    ],
)
def test_the_error_class_decides_and_the_decision_survives_the_wire(
    exc: BaseException, action: str, wait: float
) -> None:
    f = Failure.of(exc, "tb")
    assert (f.action, f.wait, f.error_type) == (action, wait, type(exc).__name__)
    assert Failure.from_json(f.to_json()) == f


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"error_type": "X", "message": "m", "action": "explode", "traceback": "", "wait": 0},
        {"error_type": "X", "message": "m", "action": "dead", "traceback": "", "wait": "1"},
        {"error_type": "X", "message": "m", "action": "dead", "traceback": "", "wait": 1, "x": 1},
    ],
)
def test_a_malformed_failure_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        Failure.from_json(bad)


def test_a_child_that_sends_a_pickle_is_ended_and_the_pickle_never_loaded(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    w = workers.spawn("--concurrency", "1", "--import", "tests.workers.fault_stages")
    dag = Dag()
    dag.add("p", "f.pickle_to_parent", {"marker": str(marker)})
    stage_client.submit(dag)
    wait_for(lambda: stage_client.dag_state(dag.id) == "completed", 30, "the DAG")
    job = stage_client.job(dag.job_id("p"))
    assert job is not None and job["attempts"] == 2 and job["result"] == "second attempt"
    assert not marker.exists()  # the parent never unpickled it
    assert "malformed message" in workers.log(w)
    assert w.poll() is None


def test_the_inline_runner_defers_a_job_whose_service_is_down_without_spending_an_attempt(
    client: Client, broker: Broker, tmp_path: Path
) -> None:
    client.registry = broker.registry = REGISTRY
    dag = Dag()
    dag.add("s", "f.service_down_once", {"marker": str(tmp_path / "m"), "service": "s3:b"})
    client.submit(dag)
    assert run_dag(client, broker, dag.id, timeout=20) == "completed"
    job = client.job(dag.job_id("s"))
    assert job is not None and job["result"] == 1 and job["attempts"] == 1
