"""Temporary outputs of a stopped, killed or retried attempt do not stay in the output
folder: the worker that kills an attempt removes them, and a later attempt removes what a
worker killed with SIGKILL left behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from pipeline.client import Client
from pipeline.model import Dag
from tests.workers.conftest import Workers, wait_for


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.part*"))


def _slow_write(client: Client, out: Path, chunks: int = 400) -> tuple[Dag, str]:
    dag = Dag()
    dag.add("w", "t.slow_write", {"path": str(out / "big.bin"), "chunks": chunks, "delay": 0.02})
    client.submit(dag)
    return dag, dag.job_id("w")


def test_a_job_stopped_by_cancel_leaves_no_temporary_output(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    workers.spawn("--concurrency", "1", "--lease", "1.5")
    dag, job_id = _slow_write(stage_client, out)
    wait_for(lambda: _parts(out), 20, "the job to start writing")
    stage_client.cancel(dag.id)
    wait_for(lambda: (stage_client.job(job_id) or {}).get("state") == "cancelled", 10, "cancel")
    wait_for(lambda: not _parts(out), 5, "the temporary output to be removed")
    assert not (out / "big.bin").exists()


def test_a_later_attempt_removes_what_a_killed_worker_left(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = workers.spawn("--concurrency", "1", "--lease", "1.5")
    dag, job_id = _slow_write(stage_client, out, chunks=60)
    wait_for(lambda: _parts(out), 20, "the first attempt to start writing")
    os.killpg(first.pid, signal.SIGKILL)  # the whole box: worker, child, everything
    first.wait(10)
    left = _parts(out)
    assert left  # what a killed attempt leaves

    workers.spawn("--concurrency", "1", "--lease", "1.5")
    wait_for(lambda: stage_client.dag_state(dag.id) == "completed", 30, "the retry")
    job = stage_client.job(job_id) or {}
    assert int(job["attempts"]) == 2
    assert (out / "big.bin").stat().st_size == 60 * 4096
    assert _parts(out) == []


def test_what_a_killed_box_left_for_a_cancelled_dag_is_swept_when_it_runs_again(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    """No later attempt and no manifest come for a cancelled DAG, and nothing of the killed
    box is left to sweep: the box's own journal of temporary outputs (stages/temp_journal.py)
    is, the next time a worker there creates one."""
    out = tmp_path / "out"
    first = workers.spawn("--concurrency", "1", "--lease", "1.5")
    dag, job_id = _slow_write(stage_client, out)
    wait_for(lambda: _parts(out), 20, "the job to start writing")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    left = _parts(out)
    assert left
    stage_client.cancel(dag.id)

    workers.spawn("--concurrency", "1", "--lease", "1.5")
    wait_for(lambda: (stage_client.job(job_id) or {}).get("state") == "cancelled", 10, "cancel")
    assert _parts(out) == left  # nothing of the cancelled DAG runs again to remove them
    other = tmp_path / "other"
    dag2, _ = _slow_write(stage_client, other, chunks=2)
    wait_for(lambda: stage_client.dag_state(dag2.id) == "completed", 30, "the next job")
    assert _parts(out) == []
    assert not (out / "big.bin").exists()
