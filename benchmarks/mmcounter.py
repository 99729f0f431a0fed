"""Fallback completion counter, used only when the shared peer harness is not found.

It keeps the file format and environment of the harness's ``peercount.py`` (one 24-byte
``<qdd`` file per process: count, first_ts, last_ts, written through mmap, in
``$PEERBENCH_COUNT_DIR``), so either module can write and either can read, and the
per-job cost (about 1 us, no syscall, no Redis command) is the same. When the harness is
present its own ``peercount`` is used instead, so mediapipe and the peers are measured by
the very same code.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time

_FMT = "<qdd"
_SIZE = struct.calcsize(_FMT)
_lock = threading.Lock()
_pid: int | None = None
_mm: mmap.mmap | None = None
_count = 0
_first = 0.0


def _open() -> None:
    global _pid, _mm, _count, _first
    path = os.path.join(os.environ["PEERBENCH_COUNT_DIR"], f"{os.getpid()}.cnt")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < _SIZE:
            os.ftruncate(fd, _SIZE)
        _mm = mmap.mmap(fd, _SIZE)
    finally:
        os.close(fd)
    _count, _first, _ = struct.unpack_from(_FMT, _mm, 0)
    _pid = os.getpid()


def record() -> None:
    """Call once at the end of every no-op job."""
    global _count, _first
    now = time.time()
    with _lock:
        if _pid != os.getpid():  # first job in this process
            _open()
            if not _first:
                _first = now
        _count += 1
        assert _mm is not None
        struct.pack_into(_FMT, _mm, 0, _count, _first, now)


def read_all(d: str) -> list[tuple[str, int, float, float]]:
    """Orchestrator side: [(key, count, first_ts, last_ts), ...]."""
    out = []
    for name in os.listdir(d):
        if not name.endswith(".cnt"):
            continue
        try:
            with open(os.path.join(d, name), "rb") as f:
                data = f.read(_SIZE)
        except OSError:
            continue
        if len(data) == _SIZE:
            n, first, last = struct.unpack(_FMT, data)
            out.append((name[:-4], n, first, last))
    return out
