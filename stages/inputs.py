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
keeps ``MIN_FREE`` free; an input a job is fetching or reading is never evicted (the job
holds the copy's lock: ``fetched``). The DAG's last job (the manifest) removes its input
from the node it runs on unless another job reads it; copies on other nodes go by the same
eviction.

A store that is down or throttling raises ServiceUnavailableError (the job is deferred,
no attempt spent); a missing object or refused access is a PermanentError; an object
whose bytes differ from what was staged is a PermanentError naming both digests.

An ``http(s)://`` input comes from whoever submits, and the worker fetching it sits next
to Redis and the cloud's metadata service, so it goes through the outbound policy
(stages.outbound) with its own variables: every hop's host resolved once and each address
checked (loopback, private, link-local and metadata addresses refused unless
``MEDIAPIPE_URL_ALLOW`` lists them; ``MEDIAPIPE_URL_PUBLIC=0`` allows only the list), the
connection made to the checked address (no second lookup: DNS rebinding cannot steer it),
at most ``MAX_REDIRECTS`` redirects, each checked the same way, no credentials (a URL with
``user:pass@`` is refused), ``MEDIAPIPE_MAX_INPUT_BYTES`` (20 GiB) and ``URL_TIMEOUT``. The
bytes are then sniffed like a local file's before any decoder sees them (stages.probe).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import shutil
import ssl
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from pipeline.errors import PermanentError, ServiceUnavailableError, disk_full

REMOTE_SCHEMES = ("s3://", "http://", "https://")
URL_ALLOW_ENV = "MEDIAPIPE_URL_ALLOW"
URL_PUBLIC_ENV = "MEDIAPIPE_URL_PUBLIC"
MAX_BYTES_ENV = "MEDIAPIPE_MAX_INPUT_BYTES"
DEFAULT_MAX_BYTES = 20 << 30
MAX_REDIRECTS = 5
URL_TIMEOUT = 30.0  # seconds to connect, and for each read
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


@contextlib.contextmanager
def fetched(
    uri: str,
    params: dict[str, Any],
    *,
    progress: ProgressFn | None = None,
    dag_id: str | None = None,
) -> Iterator[Path]:
    """``local_input``, with the copy held (a shared lock) for as long as the caller
    reads it: eviction and ``forget`` pass over a copy that a job is reading."""
    for _ in range(3):
        path = local_input(uri, params, progress=progress, dag_id=dag_id)
        with open(path.parent / f"{path.name}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            try:
                if path.exists():
                    yield path
                    return
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        # evicted between the fetch and the lock: fetch again (the lock released first)
    raise ServiceUnavailableError(f"{uri}: the node's copy kept being evicted; disk too full?")


def local_input(
    uri: str,
    params: dict[str, Any],
    *,
    progress: ProgressFn | None = None,
    dag_id: str | None = None,
) -> Path:
    """A local, verified copy of ``uri`` (fetched now unless this node has it).

    Known bytes (``input_sha256``: staged, or measured by the DAG's probe) are shared by
    every job and DAG on the node that names them. Bytes not known yet (the probe of an
    input only workers read) are fetched for ``dag_id`` alone: what a URL serves can
    change, and an earlier fetch made under another policy must not stand in for this
    one. Such a copy is then also filed under its measured SHA-256, where the DAG's later
    jobs look for it."""
    root = cache_root()
    expected = params.get("input_sha256") or None
    name = _entry(uri, expected or f"dag:{dag_id}")
    final = root / name
    with _locked(root / f"{name}.lock"):
        if final.exists():
            os.utime(final)  # most recently used
            return final
        for stale in root.glob(f"{name}.*.part"):
            stale.unlink(missing_ok=True)  # a download that was killed
        tmp = root / f"{name}.{os.getpid()}.part"
        try:
            digest = _download(uri, tmp, params, expected, progress)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
    if expected is None:
        known = root / _entry(uri, digest)
        lock = _locked(root / f"{known.name}.lock")
        with lock, contextlib.suppress(FileExistsError, FileNotFoundError):
            os.link(final, known)
    evict(root, keep=final)
    return final


def _download(
    uri: str, tmp: Path, params: dict[str, Any], expected: str | None, progress: ProgressFn | None
) -> str:
    """Fetch ``uri`` into ``tmp``, checked; returns its SHA-256."""
    if uri.startswith(("http://", "https://")):
        return _download_url(uri, tmp, expected, progress)
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
        with _local_writes(tmp), open(tmp, "wb") as out:
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
    return digest.hexdigest()


@contextlib.contextmanager
def _local_writes(tmp: Path) -> Iterator[None]:
    """Errors of this node's disk said as such (a full disk is retried as one), not as
    the store's: ``s3_errors`` around it takes any OSError for an unreachable store."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, ConnectionError | TimeoutError):
            raise
        full = disk_full(exc, tmp)
        raise (full or PermanentError(f"writing {tmp}: {exc.strerror or exc}")) from None


def forget(uri: str, params: dict[str, Any], dag_id: str | None = None) -> None:
    """Remove this node's copies of ``uri`` for this DAG (it has ended here)."""
    root = cache_root()
    for key in (params.get("input_sha256"), f"dag:{dag_id}"):
        if key:
            _remove_unless_busy(root, root / _entry(uri, key))


def _remove_unless_busy(root: Path, path: Path) -> int:
    """Remove a cached copy unless a job fetches or reads it (its lock is held); the
    bytes freed (0 when it stays, or was shared with another name). Lock files stay:
    removing one while a process waits on it would let two processes hold "the" lock."""
    with open(root / f"{path.name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        try:
            st = path.stat()
        except FileNotFoundError:
            return 0
        path.unlink(missing_ok=True)
        fcntl.flock(f, fcntl.LOCK_UN)
    return st.st_size if st.st_nlink <= 1 else 0


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
    entries: list[tuple[float, Path]] = []
    seen: dict[int, int] = {}  # inode -> size: a copy filed under two names counts once
    for p in root.iterdir():
        if p.name.endswith((".lock", ".part")):
            continue
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        seen[st.st_ino] = st.st_size
        entries.append((st.st_mtime, p))
    total = sum(seen.values())
    limit = cache_limit()
    for _, p in sorted(entries):
        if total <= limit and shutil.disk_usage(root).free >= MIN_FREE:
            break
        if p == keep:
            continue
        freed = _remove_unless_busy(root, p)
        total -= freed
        removed.append(p)
    return removed


def max_input_bytes() -> int:
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    return int(raw) if raw.isdigit() else DEFAULT_MAX_BYTES


def url_problem(url: str) -> str | None:
    """Why ``url`` can never be fetched (said at submit, before anything is queued)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s)://host/path URL"
    if parts.username is not None or parts.password is not None:
        return "a URL with credentials: they would be sent to whoever serves it; not fetched"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "a URL with spaces or control characters"
    return None


def _download_url(url: str, tmp: Path, expected: str | None, progress: ProgressFn | None) -> str:
    """GET ``url`` into ``tmp`` under the outbound policy (stages.outbound): every hop's
    address checked after resolution and connected to as checked, at most MAX_REDIRECTS
    redirects, no credentials, a size cap and timeouts."""
    from stages.outbound import OutboundPolicy, pinned_connection, shown_url

    policy = OutboundPolicy.from_env(allow_env=URL_ALLOW_ENV, public_env=URL_PUBLIC_ENV)
    cap = max_input_bytes()
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        problem = url_problem(current)
        if problem:
            raise PermanentError(f"{shown_url(current)}: {problem}")
        target = policy.check(current)  # OutboundRefusedError: a permanent, clear refusal
        conn = pinned_connection(target, URL_TIMEOUT)
        where = f"{shown_url(current)} ({target.address})"
        try:
            conn.request(
                "GET",
                target.path,
                headers={"User-Agent": "mediapipe", "Accept-Encoding": "identity"},
            )
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise PermanentError(f"{where}: a redirect without a Location")
                current = urljoin(current, location)
                continue
            if resp.status >= 500 or resp.status in (408, 429):
                raise ServiceUnavailableError(f"{where}: the server answered {resp.status}")
            if resp.status != 200:
                raise PermanentError(f"{where}: the server answered {resp.status}")
            length = resp.getheader("Content-Length")
            size = int(length) if length and length.isdigit() else None
            if size is not None and size > cap:
                raise PermanentError(f"{where}: {size} bytes, over {MAX_BYTES_ENV}={cap}")
            digest = hashlib.sha256()
            done = 0
            with open(tmp, "wb") as out:
                while chunk := resp.read(CHUNK):
                    done += len(chunk)
                    if done > cap:
                        raise PermanentError(f"{where}: over {MAX_BYTES_ENV}={cap} bytes")
                    out.write(chunk)
                    digest.update(chunk)
                    if progress is not None and size:
                        progress(100.0 * done / size, "fetching the input")
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(
                f"{where}: TLS certificate refused ({exc.verify_message})"
            ) from None
        except http.client.InvalidURL:
            raise PermanentError(f"{shown_url(current)}: not a valid URL") from None
        except (OSError, http.client.HTTPException) as exc:
            full = disk_full(exc, tmp)
            if full is not None:
                raise full from None
            raise ServiceUnavailableError(f"{where}: {type(exc).__name__}") from None
        finally:
            conn.close()
        if size is not None and done != size:
            raise ServiceUnavailableError(f"{where}: got {done} of {size} bytes")
        if expected and digest.hexdigest() != expected:
            raise PermanentError(
                f"{shown_url(url)}: its SHA-256 is {digest.hexdigest()}, it was probed as "
                f"{expected} (the file changed at its URL)"
            )
        return digest.hexdigest()
    raise PermanentError(f"{shown_url(url)}: more than {MAX_REDIRECTS} redirects")
