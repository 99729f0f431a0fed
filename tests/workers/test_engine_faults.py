"""Faults a worker meets on its own machine: a full disk, a lane that times out."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

import tests.workers.engine_stages  # noqa: F401  (registers the engine test stages)
from pipeline.client import Client
from pipeline.model import Dag, JobOptions
from tests import helpers
from tests.workers.conftest import Workers, wait_for

ENGINE_STAGES = ("--import", "tests.workers.engine_stages")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB filesystem: writing more fails with ENOSPC from the kernel (the
    /dev/full test covers ENOSPC where mounting is not allowed)."""
    with helpers.small_disk(tmp_path / "small", "64k") as where:
        yield where


def _finished(client: Client, dag: Dag) -> bool:
    return client.dag_state(dag.id) in ("completed", "failed")


def _assert_disk_full(client: Client, dag: Dag, name: str, path: str | None) -> None:
    job = client.job(dag.job_id(name))
    assert job is not None
    assert job["state"] == "dead"
    assert job["attempts"] == 2  # retryable: the second attempt ran too
    err = job["error"]
    assert err["type"] == "DiskFullError"
    assert err["permanent"] is False
    assert "\n" not in err["message"]
    assert err["message"].startswith("no space left on device")
    if path is not None:
        assert path in err["message"]


def test_a_full_disk_fails_the_job_as_retryable_leaves_no_partial_file_and_the_worker_lives(
    workers: Workers, stage_client: Client, small_disk: Path
) -> None:
    """ENOSPC from a real 64 KiB tmpfs while an output is written."""
    proc = workers.spawn("--concurrency", "1", *ENGINE_STAGES)
    out = small_disk / "out.bin"
    dag = Dag()
    dag.add("fill", "t.fill", {"path": str(out), "size": 256 * 1024})
    stage_client.submit(dag)
    wait_for(lambda: _finished(stage_client, dag), 30, "the job to die")
    _assert_disk_full(stage_client, dag, "fill", str(out))
    assert list(small_disk.iterdir()) == []  # neither the output nor a temporary file
    assert proc.poll() is None
    ok = Dag()
    ok.add("fill", "t.fill", {"path": str(out), "size": 8 * 1024})
    stage_client.submit(ok)
    wait_for(lambda: _finished(stage_client, ok), 30, "the next job")
    assert stage_client.dag_state(ok.id) == "completed"
    assert [p.name for p in small_disk.iterdir()] == ["out.bin"]


def test_enospc_on_a_scratch_write_fails_the_job_as_retryable_and_the_worker_lives(
    workers: Workers, stage_client: Client
) -> None:
    """ENOSPC for real from /dev/full (no root needed), on a write no helper wraps. A
    failed write() names no file, so the message cannot name the path here."""
    proc = workers.spawn("--concurrency", "1", *ENGINE_STAGES)
    dag = Dag()
    dag.add("scratch", "t.scratch", {"scratch": "/dev/full", "size": 64 * 1024})
    stage_client.submit(dag)
    wait_for(lambda: _finished(stage_client, dag), 30, "the job to die")
    _assert_disk_full(stage_client, dag, "scratch", None)
    assert proc.poll() is None
    ok = Dag()
    ok.add("e", "t.echo", {})
    stage_client.submit(ok)
    wait_for(lambda: _finished(stage_client, ok), 30, "the next job")
    assert stage_client.dag_state(ok.id) == "completed"


def test_a_lane_timeout_reports_the_finished_jobs_of_its_claim_and_fails_only_the_late_one(
    workers: Workers, stage_client: Client
) -> None:
    gpu = workers.spawn("--tags", "tbatch", "--concurrency", "1")
    wait_for(lambda: any(w.get("lane") for w in stage_client.workers()), 30, "the lane")
    # Paused, so the lane takes all of them in one claim once resumed.
    stage_client.pause("default@tbatch")
    slow = Dag()
    slow.add(
        "b",
        "t.batchable",
        {"n": 0, "decline": True, "sleep": 5},
        options=JobOptions(timeout=1.0),
    )
    later = Dag()  # declined too, queued behind the slow one: never started
    later.add("b", "t.batchable", {"n": 9, "decline": True})
    fast = []
    for i in range(1, 4):
        d = Dag()
        d.add("b", "t.batchable", {"n": i})
        fast.append(d)
    stage_client.submit_many([slow, later, *fast])
    assert stage_client.queue_counts("default@tbatch")["waiting"] == 5
    stage_client.resume("default@tbatch")
    wait_for(lambda: stage_client.dag_state(slow.id) == "failed", 30, "the timeout")
    slow_job = stage_client.job(slow.job_id("b"))
    assert slow_job is not None and slow_job["error"]["type"] == "JobTimeoutError"
    for d in fast:
        wait_for(partial(_finished, stage_client, d), 5, f"DAG {d.id}")
        job = stage_client.job(d.job_id("b"))
        assert job is not None
        assert job["state"] == "completed" and job["attempts"] == 1
        assert job["result"]["batch"] == 5
    # Handed back when the lane ended, it runs on the next lane without a spent attempt.
    wait_for(lambda: _finished(stage_client, later), 30, "the job the lane never started")
    job = stage_client.job(later.job_id("b"))
    assert job is not None and job["state"] == "completed" and job["attempts"] == 1
    assert gpu.poll() is None
