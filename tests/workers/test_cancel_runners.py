"""The inline runner and batch lanes stop a job whose DAG was cancelled or whose lease was
lost while it ran, and a lane's one-by-one path honours the job timeout."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.keys import Keys
from pipeline.model import Dag, JobOptions
from pipeline.registry import REGISTRY
from tests.workers.conftest import Workers, wait_for
from tests.workers.fault_stages import runs
from workers.inline import InlineRunner


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _nothing_reported(job: dict[str, Any]) -> None:
    """The runner that lost the lease reported nothing: the job is still the new owner's
    (or, with nobody renewing that lease, reclaimed as stalled)."""
    assert job["state"] != "completed" and not job.get("result")
    assert not job.get("error") or job["error"]["type"] == "StalledError"


class Running:
    """An inline runner on a thread of the test process."""

    def __init__(self, runner: InlineRunner) -> None:
        self.runner = runner
        self.stop = threading.Event()
        self.thread = threading.Thread(target=runner.run, args=(self.stop.is_set,), daemon=True)
        self.thread.start()


@pytest.fixture
def inline(r: redis.Redis, namespace: str) -> Iterator[Running]:
    broker = Broker(r, namespace=namespace, registry=REGISTRY, lease=1.5)
    running = Running(InlineRunner(broker, ["default"], idle_wait=0.1))
    yield running
    running.stop.set()
    running.thread.join(10)


def _sleeper(client: Client, seconds: float = 30.0) -> Dag:
    dag = Dag()
    dag.add("s", "t.sleep", {"seconds": seconds})
    client.submit(dag)
    return dag


@pytest.mark.serial  # alone under xdist: the stop must come < 3 s after the cancel
def test_the_inline_runner_stops_a_job_whose_dag_is_cancelled(
    inline: Running, stage_client: Client
) -> None:
    dag = _sleeper(stage_client)
    job_id = dag.job_id("s")
    wait_for(lambda: (stage_client.job(job_id) or {}).get("state") == "active", 10, "the start")
    stage_client.cancel(dag.id)
    t0 = time.monotonic()
    wait_for(lambda: inline.runner.processed == 1, 10, "the runner to stop the job")
    assert time.monotonic() - t0 < 3.0
    assert (stage_client.job(job_id) or {})["state"] == "cancelled"
    assert stage_client.dag_state(dag.id) == "cancelled"
    assert stage_client.dead() == []


def test_the_inline_runner_stops_a_job_whose_lease_was_lost(
    inline: Running, stage_client: Client, r: redis.Redis, namespace: str
) -> None:
    dag = _sleeper(stage_client)
    job_id = dag.job_id("s")
    wait_for(lambda: (stage_client.job(job_id) or {}).get("state") == "active", 10, "the start")
    r.hset(Keys(namespace).job(job_id), "owner", "another-worker")
    wait_for(lambda: inline.runner.processed == 1, 10, "the runner to stop the job")
    _nothing_reported(stage_client.job(job_id) or {})


def _lane_pid(client: Client) -> int | None:
    for w in client.workers():
        if w.get("lane") == "batch:t.batchable":
            return int(w["pid"])
    return None


def _lane_job(client: Client, **params: Any) -> tuple[Dag, str]:
    timeout = float(params.pop("t", 0))
    dag = Dag()
    dag.add("b", "t.batchable", {"n": 0, **params}, options=JobOptions(timeout=timeout))
    client.submit(dag)
    return dag, dag.job_id("b")


@pytest.mark.parametrize("path", ["batch", "one_by_one"])
def test_a_lane_stops_a_running_job_whose_dag_is_cancelled(
    workers: Workers, stage_client: Client, path: str
) -> None:
    gpu = workers.spawn("--tags", "tbatch", "--concurrency", "1", "--lease", "1.5")
    lane = wait_for(lambda: _lane_pid(stage_client), 30, "the lane to register")
    params = {"hang": True} if path == "batch" else {"decline": True, "sleep": 600}
    dag, job_id = _lane_job(stage_client, **params)
    wait_for(lambda: (stage_client.job(job_id) or {}).get("state") == "active", 15, "the start")
    stage_client.cancel(dag.id)
    wait_for(lambda: (stage_client.job(job_id) or {}).get("state") == "cancelled", 10, "cancel")
    assert stage_client.dag_state(dag.id) == "cancelled"
    wait_for(lambda: not _alive(lane), 10, "the lane running it to stop")
    # A new lane serves the queue again.
    wait_for(lambda: (pid := _lane_pid(stage_client)) and pid != lane, 30, "a new lane")
    assert gpu.poll() is None


def test_a_lane_stops_a_running_job_whose_lease_was_lost(
    workers: Workers, stage_client: Client, r: redis.Redis, namespace: str
) -> None:
    workers.spawn("--tags", "tbatch", "--concurrency", "1", "--lease", "1.5")
    lane = wait_for(lambda: _lane_pid(stage_client), 30, "the lane to register")
    _, job_id = _lane_job(stage_client, hang=True)
    wait_for(lambda: (stage_client.job(job_id) or {}).get("state") == "active", 15, "the start")
    r.hset(Keys(namespace).job(job_id), "owner", "another-worker")
    wait_for(lambda: not _alive(lane), 10, "the lane running it to stop")
    _nothing_reported(stage_client.job(job_id) or {})


@pytest.mark.serial  # alone under xdist: the failure must come < 3.5 s after the submit
def test_a_lane_job_run_one_by_one_is_stopped_at_its_timeout(
    workers: Workers, stage_client: Client
) -> None:
    workers.spawn("--tags", "tbatch", "--concurrency", "1")
    wait_for(lambda: _lane_pid(stage_client), 30, "the lane to register")
    dag, job_id = _lane_job(stage_client, decline=True, sleep=4.0, t=1.0)
    t0 = time.monotonic()
    wait_for(lambda: stage_client.dag_state(dag.id) == "failed", 15, "the timeout")
    assert time.monotonic() - t0 < 3.5
    job = stage_client.job(job_id) or {}
    assert job["state"] == "dead" and job["error"]["type"] == "JobTimeoutError"


def test_a_worker_does_not_start_a_held_job_whose_dag_was_cancelled(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    """A claimed job can wait in a worker's hands (here: it needs both slots while the
    other runs); a cancel that returns meanwhile keeps its function from ever starting."""
    tally = tmp_path / "tally"
    busy, held = Dag(), Dag()
    busy.add("a", "f.tally", {"n": 0, "tally": str(tally), "seconds": 2.0})
    held.add("b", "f.tally", {"n": 1, "tally": str(tally)}, cost=2)
    stage_client.submit(busy)
    stage_client.submit(held)
    workers.spawn("--concurrency", "2", "--lease", "30", "--import", "tests.workers.fault_stages")
    both = (busy.job_id("a"), held.job_id("b"))
    wait_for(
        lambda: all((stage_client.job(j) or {}).get("state") == "active" for j in both),
        20,
        "both jobs claimed",
    )
    stage_client.cancel(held.id)
    wait_for(lambda: stage_client.dag_state(busy.id) == "completed", 20, "the busy DAG")
    time.sleep(0.5)  # the held job would start now, were the cancel not seen
    assert runs(tally) == {busy.job_id("a"): 1}
    assert (stage_client.job(held.job_id("b")) or {})["state"] == "cancelled"
    assert stage_client.dead() == []
