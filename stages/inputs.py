"""Inputs that are not on this machine's disk: fetched into a node-local cache first.

A job whose ``input`` is a URI (``s3://bucket/key``: staged by ``mediapipe submit --stage``
or named by the user) runs on a local copy. The copy is fetched once per node: every stage
of the DAG that runs on this node (probe, ladder, poster, sprite...) reads the same file,
and two jobs asking for it at once wait for one download (a lock file per input). It is
streamed to a temporary name, its size checked against the store's and its SHA-256
against the one it was staged with (``input_sha256``, else the object's ``sha256``
metadata), and only then renamed into place, so a kill mid-download never leaves a file
that a later job would take for complete (the next download removes the partial one).

The cache lives in ``$MEDIAPIPE_INPUT_CACHE`` (default ``<tmp>/mediapipe-inputs-<uid>``,
mode 0700) and is bounded: after each download the least recently used inputs go until
the cache holds at most ``$MEDIAPIPE_INPUT_CACHE_BYTES`` (default 20 GiB) and the disk
keeps ``MIN_FREE`` free; an input another job is fetching is never evicted. The DAG's
last job (the manifest) removes its input from the node it runs on; copies on other nodes
go by the same eviction.

A store that is down or throttling raises ServiceUnavailableError (the job is deferred,
no attempt spent); a missing object or refused access is a PermanentError; an object
whose bytes differ from what was staged is a PermanentError naming both digests.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import PermanentError

REMOTE_SCHEMES = ("s3://",)
DEFAULT_CACHE_BYTES = 20 << 30
MIN_FREE = 2 << 30  # bytes of disk an eviction leaves free, whatever the cache's bound
CHUNK = 1 << 20

ProgressFn = Callable[[float, str], None]


def is_remote(path: object) -> bool:
    return isinstance(path, str) and path.startswith(REMOTE_SCHEMES)


def cache_root() -> Path:
    """The node's input cache: created private (0700), refused when it is not a real
    folder of this user (a planted symlink or someone else's folder)."""
    root = Path(
        os.environ.get("MEDIAPIPE_INPUT_CACHE")
        or Path(tempfile.gettempdir()) / f"mediapipe-inputs-{os.geteuid()}"
    )
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermanentError(f"input cache {root} is not a folder of this user")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(root, 0o700)
    return root


def cache_limit() -> int:
    raw = os.environ.get("MEDIAPIPE_INPUT_CACHE_BYTES", "").strip()
    return int(raw) if raw.isdigit() else DEFAULT_CACHE_BYTES


def _entry(uri: str, sha256: str | None) -> str:
    """The cache file's name: a digest of what identifies the bytes, with the object's
    suffix kept (readers sniff content, but a suffix costs nothing and helps humans)."""
    key = hashlib.sha256(f"{uri}\n{sha256 or ''}".encode()).hexdigest()[:32]
    suffix = Path(uri.rsplit("/", 1)[-1]).suffix
    safe = suffix if suffix[1:].isalnum() and len(suffix) <= 8 else ""
    return key + safe.lower()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def local_input(
    uri: str,
    params: dict[str, Any],
    *,
    progress: ProgressFn | None = None,
) -> Path:
    """A local, verified copy of ``uri`` (fetched now unless this node has it)."""
    root = cache_root()
    expected = params.get("input_sha256") or None
    name = _entry(uri, expected)
    final = root / name
    with _locked(root / f"{name}.lock"):
        if final.exists():
            os.utime(final)  # most recently used
            return final
        for stale in root.glob(f"{name}.*.part"):
            stale.unlink(missing_ok=True)  # a download that was killed
        tmp = root / f"{name}.{os.getpid()}.part"
        try:
            _download(uri, tmp, params, expected, progress)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
    evict(root, keep=final)
    return final


def _download(
    uri: str, tmp: Path, params: dict[str, Any], expected: str | None, progress: ProgressFn | None
) -> None:
    from stages.storage import S3Storage, s3_errors

    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise PermanentError(f"{uri}: not an s3://bucket/key URI")
    store = S3Storage(bucket, endpoint=params.get("endpoint"))
    digest = hashlib.sha256()
    done = 0
    with s3_errors(uri):
        obj = store.client.get_object(Bucket=bucket, Key=key)
        size = int(obj["ContentLength"])
        stored = (obj.get("Metadata") or {}).get("sha256")
        with open(tmp, "wb") as out:
            for chunk in obj["Body"].iter_chunks(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None and size:
                    progress(100.0 * done / size, "fetching the input")
    if done != size:
        raise PermanentError(f"{uri}: got {done} bytes, the store says {size}")
    want = expected or stored
    if want and digest.hexdigest() != want:
        raise PermanentError(f"{uri}: its SHA-256 is {digest.hexdigest()}, it was staged as {want}")


def forget(uri: str, params: dict[str, Any]) -> None:
    """Remove this node's copy of ``uri`` (its DAG has ended here)."""
    root = cache_root()
    name = _entry(uri, params.get("input_sha256") or None)
    with _locked(root / f"{name}.lock"):
        (root / name).unlink(missing_ok=True)
    (root / f"{name}.lock").unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def evict(root: Path, keep: Path | None = None) -> list[Path]:
    """Remove the partial downloads of processes that are gone (a worker killed
    mid-download), then least recently used inputs until the cache fits its bound and the
    disk keeps ``MIN_FREE``; skips inputs whose lock another process holds."""
    removed = []
    for part in root.glob("*.part"):
        pid = part.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _pid_alive(int(pid)):
            part.unlink(missing_ok=True)
            removed.append(part)
    files = [p for p in root.iterdir() if p.is_file() and not p.name.endswith((".lock", ".part"))]
    files.sort(key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    limit = cache_limit()
    for p in files:
        free = shutil.disk_usage(root).free
        if total <= limit and free >= MIN_FREE:
            break
        if p == keep:
            continue
        lock = root / f"{p.name}.lock"
        with open(lock, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being fetched or read right now
            size = p.stat().st_size
            p.unlink(missing_ok=True)
            fcntl.flock(f, fcntl.LOCK_UN)
        total -= size
        removed.append(p)
    return removed
