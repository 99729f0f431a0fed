"""Writing outputs so that nothing half-written is ever visible under a final name.

Every output is produced under a temporary name in the destination directory and renamed
into place only when complete (rename is atomic on one filesystem). A failure or a kill
leaves at most a ``.part`` file, which the next attempt overwrites and which readers
ignore.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PART_SUFFIX = ".part"


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it to ``final`` on success.

    The temporary name keeps the final suffix (``x.jpg.<id>.part.jpg``) so tools that pick
    the format from the file name (libvips, ffmpeg) still do.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Like ``atomic_output`` for a directory of files (an HLS package)."""
    import shutil

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_of(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_facts(path: str | os.PathLike[str], **facts: Any) -> dict[str, Any]:
    """The manifest entry of one output: path, bytes, sha256 plus the given facts."""
    p = Path(path)
    return {"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_of(p), **facts}


def bytes_facts(path: str | os.PathLike[str], data: bytes, **facts: Any) -> dict[str, Any]:
    """``file_facts`` for an output already read into memory (``data`` is its content)."""
    digest = hashlib.sha256(data).hexdigest()
    return {"path": str(Path(path)), "bytes": len(data), "sha256": digest, **facts}
