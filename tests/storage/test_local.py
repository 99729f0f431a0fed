"""The local backend: a worker killed mid-write leaves nothing under the final name."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from pipeline.client import Client
from pipeline.model import Dag
from stages.storage import LocalStorage
from tests.workers.conftest import Workers, wait_for


def test_a_worker_killed_mid_write_leaves_no_partial_file_under_the_final_name(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    final = tmp_path / "out" / "video_720p.mp4"
    w = workers.spawn("--concurrency", "1", "--lease", "1")
    dag = Dag()
    dag.add("write", "t.slow_write", {"path": str(final), "chunks": 200, "delay": 0.02})
    stage_client.submit(dag)
    wait_for(
        lambda: any(final.parent.glob(".*.part*")) if final.parent.exists() else False,
        what="the write to start",
    )
    os.killpg(w.pid, signal.SIGKILL)
    w.wait(10)
    assert not final.exists()
    assert [p for p in final.parent.iterdir() if not p.name.startswith(".")] == []

    workers.spawn("--concurrency", "1", "--lease", "1")  # the job is reclaimed and redone
    wait_for(lambda: stage_client.dag_state(dag.id) == "completed", 30, "the rewrite")
    assert final.stat().st_size == 200 * 4096


def test_local_storage_copies_atomically_and_verifies(tmp_path: Path) -> None:
    src = tmp_path / "scratch" / "a.webp"
    src.parent.mkdir()
    src.write_bytes(os.urandom(100_000))
    store = LocalStorage(tmp_path / "final")
    uri = store.put(src, "clip/a.webp")
    assert Path(uri).read_bytes() == src.read_bytes()
    assert [p.name for p in (tmp_path / "final" / "clip").iterdir()] == ["a.webp"]
