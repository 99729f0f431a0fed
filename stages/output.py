"""Writing outputs so that nothing half-written is ever visible under a final name.

Every output is produced under a temporary name in the destination directory and renamed
into place only when complete (rename is atomic on one filesystem). A failure inside the
stage removes its temporary file; a kill cannot, so the names say whose they are:

    .<final name>.<dag key>-<job key>-<attempt>-<random>.part[.<final suffix>]

(keys are short hashes of the DAG and job ids). Whoever kills an attempt removes the
files it had started (the worker parent learns each path before the file exists, through
``JobContext.temp_created``; a lane removes its own before it exits), a later attempt of
the same job removes what earlier attempts left next to its outputs, and the DAG's last
stage removes whatever any attempt of its DAG left in the output folder.

Names come from whoever named the input (a watched drop folder takes uploads), so
``output_name`` turns one into a safe file name and ``output_path`` is how every stage
builds a path to write: it refuses a part that is not a plain file name, and a path that
resolves (symlinks included) outside the job's output folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import threading
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.context import current
from pipeline.errors import BadInputError, DiskFullError, disk_full
from stages import temp_journal
from stages.temp_journal import remove as remove  # re-exported: callers remove temps by it

PART_SUFFIX = ".part"

# An output name keeps ASCII letters, digits, ".", "_" and "-"; any other run of characters
# becomes one "_". Accents are dropped first (café -> cafe) so Latin names stay readable.
NAME_CHARS = "A-Za-z0-9._-"
_NOT_NAME_CHAR = re.compile(f"[^{NAME_CHARS}]+")
# Room left for what stages append ("_1080p_hls", "_2048w.avif") and for the temporary
# name around that (".<name>.<8>-<8>-<attempt>-<6>.part.avif"): 255 bytes in all.
MAX_NAME_BYTES = 100
FALLBACK_NAME = "input"

_live: set[Path] = set()  # temporary outputs of this process not yet renamed or removed
_live_lock = threading.Lock()


def _key(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def dag_key(dag_id: str) -> str:
    return _key(dag_id)


def output_name(raw: str) -> str:
    """A file name made from an untrusted name (an input's stem): only ``NAME_CHARS``, not
    starting or ending with ".", "_" or "-" (no hidden file, no ``..``, nothing a tool reads
    as an option), at most ``MAX_NAME_BYTES``, never empty (``FALLBACK_NAME``)."""
    ascii_only = "".join(
        c for c in unicodedata.normalize("NFKD", raw) if not unicodedata.combining(c)
    )
    # Stripped again after the cut, which can leave a "." or "-" at the end.
    name = _NOT_NAME_CHAR.sub("_", ascii_only).strip("._-")[:MAX_NAME_BYTES].rstrip("._-")
    return name or FALLBACK_NAME


def output_path(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root / parts``, where a stage may write: each part a plain file name (no "/", not
    "." or "..", no NUL) and the whole resolving inside ``root`` even through symlinks,
    else a BadInputError (a permanent failure: the job's params are at fault)."""
    return OutputFolder(root).path(*parts)


class OutputFolder:
    """``output_path`` for the many outputs of one folder: ``root`` is resolved once, then
    each path costs an ``lstat`` per part instead of resolving ``root`` and the path again.

    The check is the same: once the parts are plain names, ``root/a/b`` resolves to
    ``realpath(root)/a/b`` unless one of them is a symlink, and only then is the rest
    resolved through it and checked. Resolving ``root`` once per stage run instead of once
    per output loses nothing: either way the folder is checked before it is written, and
    one that is swapped for a symlink after its check is written through."""

    __slots__ = ("_inside", "_real", "root")

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._real = str(self.root.resolve())  # pathlib's, as below: a loop raises
        self._inside = self._real.rstrip("/") + "/"

    def path(self, *parts: str) -> Path:
        for part in parts:
            if part in ("", ".", "..") or "/" in part or "\0" in part:
                raise BadInputError(f"output name {part!r} is not a plain file name")
        real = self._real
        for part in parts:
            real = os.path.join(real, part)
            if os.path.islink(real):
                real = str(Path(real).resolve())
        path = self.root.joinpath(*parts)
        if real != self._real and not real.startswith(self._inside):
            raise BadInputError(f"output {path} resolves outside its output folder {self.root}")
        return path


def _temp_path(final: Path, suffix: str) -> Path:
    """The temporary name for ``final``, recording the job and attempt that write it."""
    rand = uuid.uuid4().hex[:6]
    ctx = current()
    if ctx is None:
        tmp = final.with_name(f".{final.name}.{rand}{PART_SUFFIX}{suffix}")
        temp_journal.note(tmp)
        return tmp
    job = ctx.job
    prefix = f".{final.name}.{_key(job.dag_id)}-{_key(job.id)}-"
    if job.attempt > 1:  # attempts count from 1 (claim_next.lua): the first has no earlier
        _sweep_earlier(final.parent, prefix, job.attempt)
    tmp = final.with_name(f"{prefix}{job.attempt}-{rand}{PART_SUFFIX}{suffix}")
    temp_journal.note(tmp)  # swept from there if this whole box is killed (temp_journal)
    ctx.temp_created(str(tmp))
    return tmp


def _sweep_earlier(folder: Path, prefix: str, attempt: int) -> None:
    """Remove what earlier attempts of this job left for the same output (they were
    killed, or lost their lease and no longer own the job)."""
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for e in entries:
            if not e.name.startswith(prefix) or PART_SUFFIX not in e.name:
                continue
            try:
                earlier = int(e.name[len(prefix) :].split("-", 1)[0])
            except ValueError:
                continue
            if earlier < attempt:
                remove(Path(e.path))


def sweep_dag_temps(folder: str | os.PathLike[str], dag_id: str) -> list[str]:
    """Remove every temporary output any attempt of ``dag_id`` left in ``folder`` (called
    once every other job of the DAG has finished)."""
    marker = f".{dag_key(dag_id)}-"
    removed = []
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for e in entries:
            if e.name.startswith(".") and marker in e.name and PART_SUFFIX in e.name:
                with _live_lock:
                    mine = Path(e.path) in _live
                if not mine:
                    remove(e.path)
                    removed.append(e.path)
    return removed


def remove_live_temps() -> None:
    """Remove this process's unfinished temporary outputs (it is about to exit without
    finishing the jobs writing them)."""
    with _live_lock:
        paths = list(_live)
        _live.clear()
    for p in paths:
        remove(p)


@contextlib.contextmanager
def _tracked(tmp: Path) -> Iterator[None]:
    with _live_lock:
        _live.add(tmp)
    try:
        yield
    finally:
        with _live_lock:
            _live.discard(tmp)


# How libvips (a pyvips.Error's detail) and ffmpeg (its last error line) say the disk or
# the quota is full: strerror's texts, as neither raises an OSError.
_FULL_TEXTS = {"No space left on device": "no space left on device",
               "Disk quota exceeded": "disk quota exceeded"}  # fmt: skip


def disk_full_in_text(exc: BaseException, final: object) -> DiskFullError | None:
    """A one-line DiskFullError naming ``final`` when a library's error says the disk is
    full, else None."""
    text = f"{exc} {getattr(exc, 'detail', '')}".lower()
    for said, what in _FULL_TEXTS.items():
        if said.lower() in text:
            return DiskFullError(f"{what} writing {final}")
    return None


@contextlib.contextmanager
def _full_disk_named(final: Path) -> Iterator[None]:
    """A full disk while writing ``final`` becomes one retryable line naming it, whether
    Python's own write said so (an OSError) or libvips' or ffmpeg's."""
    try:
        yield
    except OSError as exc:
        full = disk_full(exc, final)
        if full is None:
            raise
        raise full from exc
    except Exception as exc:
        full = disk_full_in_text(exc, final)
        if full is None:
            raise
        raise full from exc


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it to ``final`` on success.

    The temporary name keeps the final suffix (``x.jpg.<tag>.part.jpg``) so tools that pick
    the format from the file name (libvips, ffmpeg) still do.
    """
    final = Path(final)
    if not os.path.isdir(final.parent):  # one stat, not a failing mkdir, when it is there
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(final, final.suffix)
    with _tracked(tmp):
        try:
            with _full_disk_named(final):
                yield tmp
                os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Like ``atomic_output`` for a directory of files (an HLS package)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(final, "")
    with _tracked(tmp):
        tmp.mkdir()
        try:
            with _full_disk_named(final):
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
