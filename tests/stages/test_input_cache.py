"""The node-local input cache (stages/inputs.py): eviction and ``forget`` never take a
copy that a job is reading, count a copy filed under two names once, and never remove a
lock file (a waiter on a removed lock would share "the" lock with a newcomer)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from stages import inputs


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("MEDIAPIPE_INPUT_CACHE", str(root))
    return inputs.cache_root()


def _copy(root: Path, name: str, size: int, age: float) -> Path:
    p = root / name
    p.write_bytes(b"x" * size)
    t = os.stat(p).st_mtime - age
    os.utime(p, (t, t))
    return p


def test_eviction_passes_over_a_copy_being_read_and_counts_linked_names_once(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_read = _copy(cache, "a.mp4", 1000, 300)  # least recently used, but being read
    old_idle = _copy(cache, "b.mp4", 1000, 200)
    newest = _copy(cache, "c.mp4", 1000, 100)
    os.link(newest, cache / "c-by-digest.mp4")  # the same bytes under a second name
    monkeypatch.setenv("MEDIAPIPE_INPUT_CACHE_BYTES", "2000")  # 3000 bytes held, not 4000
    with open(cache / "a.mp4.lock", "a") as reader:
        fcntl.flock(reader, fcntl.LOCK_SH)
        inputs.evict(cache)
    assert old_read.exists()  # a job reads it
    assert not old_idle.exists()  # the least recently used one nobody reads
    assert newest.exists() and (cache / "c-by-digest.mp4").exists()  # within the bound now
    assert (cache / "a.mp4.lock").exists() and (cache / "b.mp4.lock").exists()


def test_forget_leaves_a_copy_another_job_reads(cache: Path) -> None:
    uri, params = "s3://bucket/in/talk.mp4", {"input_sha256": "ab" * 32}
    name = inputs._entry(uri, params["input_sha256"])
    copy = _copy(cache, name, 10, 0)
    with open(cache / f"{name}.lock", "a") as reader:
        fcntl.flock(reader, fcntl.LOCK_SH)
        inputs.forget(uri, params, "dag1")
        assert copy.exists()
    inputs.forget(uri, params, "dag1")
    assert not copy.exists() and (cache / f"{name}.lock").exists()
