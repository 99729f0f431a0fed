"""Where finished outputs go: a local folder, or S3-compatible object storage.

With object storage, a stage writes into a local scratch folder (new for each attempt, and
private to the user); then, in the same job, the storage step uploads each output,
verifies it (size and SHA-256 read back from the store), records its URI in place of the
local path, and removes the scratch folder. The upload runs where the files are, so no
shared disk is needed between workers.

Failures are classified for the worker: an unreachable, failing (5xx) or throttling store
raises ServiceUnavailableError (the job is deferred and the fleet's breaker counts it);
access denied, a missing bucket or an invalid key raise PermanentError (dead-letter queue
at once, with the reason).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import mimetypes
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from pipeline.connection import redacted
from pipeline.errors import PermanentError, ServiceUnavailableError
from stages.output import atomic_output, output_name, output_path, sha256_of
from stages.outputs import iter_outputs

PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "NoSuchBucket",
        "InvalidBucketName",
        "KeyTooLongError",
        "InvalidArgument",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidObjectState",
        "EntityTooLarge",
    }
)
THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "503",
        "429",
    }
)

log = logging.getLogger("mediapipe.storage")

mimetypes.add_type("application/vnd.apple.mpegurl", ".m3u8")
mimetypes.add_type("video/iso.segment", ".m4s")
mimetypes.add_type("image/avif", ".avif")
mimetypes.add_type("image/webp", ".webp")


class Storage(Protocol):
    def put(self, src: Path, key: str) -> str: ...


def content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class LocalStorage:
    """A folder; each file is copied under a temporary name and renamed when complete."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def put(self, src: Path, key: str) -> str:
        final = self.root / key
        with atomic_output(final) as tmp:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        if final.stat().st_size != src.stat().st_size or sha256_of(final) != sha256_of(src):
            raise ServiceUnavailableError(f"{final}: verification failed after copy")
        return str(final)


@functools.cache
def _client(endpoint: str | None) -> Any:
    """One client per endpoint and process: creating one loads botocore's service models,
    which takes longer than uploading a small rendition."""
    import boto3
    from botocore.config import Config

    # One try per call and short timeouts: retrying is the queue's job (with backoff
    # and the breaker), not the SDK's, which would hide an outage behind long stalls.
    config = Config(
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=3,
        read_timeout=30,
        s3={"addressing_style": "path"},
    )
    client = boto3.client("s3", endpoint_url=endpoint, config=config)
    # The first request pays for endpoint rules and signer set-up (hundreds of ms on a
    # busy box); pay it now, offline, so a breaker check made just before an upload is
    # still current when the upload hits the network.
    client.generate_presigned_url("get_object", Params={"Bucket": "warm-up", "Key": "k"})
    return client


MIN_PART = 5 * 1024 * 1024  # S3's smallest part (all but the last)
MAX_PART = 5 * 1024 * 1024 * 1024  # and its largest


def part_size(default: int) -> int:
    """``MEDIAPIPE_UPLOAD_PART_SIZE`` (bytes), else ``default``: the size from which an
    upload goes multipart, and the size of its parts; kept within S3's 5 MiB to 5 GiB (a
    value that is not a whole number is ignored; the config file's is checked when read)."""
    try:
        value = int(os.environ.get("MEDIAPIPE_UPLOAD_PART_SIZE", "") or default)
    except ValueError:
        value = default
    return min(MAX_PART, max(MIN_PART, value))


class S3Storage:
    """An S3-compatible bucket. The endpoint comes from ``endpoint`` or the standard
    ``AWS_ENDPOINT_URL``; credentials from the usual AWS environment and config files.

    ``MULTIPART``: the default part size, and the size from which an upload is multipart
    (``MEDIAPIPE_UPLOAD_PART_SIZE`` overrides it)."""

    MULTIPART = 16 * 1024 * 1024

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
        self.client = _client(self.endpoint)
        self.part = part_size(self.MULTIPART)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, src: Path, key: str, progress: Callable[[int, int], None] | None = None) -> str:
        """Upload ``src`` (multipart when large), then check size and SHA-256 read back.
        ``progress(done, total)`` is called as bytes go out."""
        from boto3.s3.transfer import TransferConfig

        digest = sha256_of(src)
        size = src.stat().st_size
        full = self._key(key)
        sent = [0]

        def callback(n: int) -> None:
            sent[0] += n
            if progress is not None:
                progress(sent[0], size)

        with s3_errors(self.uri(key)):
            if size >= self.part:  # boto3 goes multipart from the threshold on
                self.abort_incomplete(full)
            self.client.upload_file(
                str(src),
                self.bucket,
                full,
                Callback=callback if progress is not None else None,
                ExtraArgs={"ContentType": content_type(src), "Metadata": {"sha256": digest}},
                Config=TransferConfig(
                    multipart_threshold=self.part,
                    multipart_chunksize=self.part,
                    use_threads=False,
                ),
            )
            head = self.client.head_object(Bucket=self.bucket, Key=full)
        if head["ContentLength"] != size or head.get("Metadata", {}).get("sha256") != digest:
            raise ServiceUnavailableError(
                f"{self.uri(key)}: verification failed (stored {head['ContentLength']} bytes)"
            )
        return self.uri(key)

    def abort_incomplete(self, full: str) -> int:
        """Abort every multipart upload of exactly ``full`` that was started and never
        completed; the number aborted. A process killed mid-upload leaves its upload in the
        bucket, invisible to listings and GETs but stored and billed, until someone aborts
        it: the next upload of the same key (the job's next attempt, or the next submit
        staging the same file) does, before it starts its own. An upload of the key still
        running elsewhere (an attempt whose lease lapsed) is aborted too: its completion
        then fails and, its lease being lost, its result was to be discarded anyway.
        Outages raise as for the upload; a store that refuses the listing or the abort
        (no ``s3:ListBucketMultipartUploads``/``s3:AbortMultipartUpload``) leaves them to
        a lifecycle rule, logged, without failing the upload."""
        from botocore.exceptions import ClientError

        aborted = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload.get("Key") != full:
                        continue  # a longer key with this one as its prefix
                    try:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=full, UploadId=upload["UploadId"]
                        )
                        aborted += 1
                    except ClientError as exc:
                        if _code(exc) != "NoSuchUpload":  # completed or aborted meanwhile
                            raise
        except ClientError as exc:
            if _code(exc) not in ("AccessDenied", "NotImplemented"):
                raise
            log.warning(
                "%s: incomplete multipart uploads not cleaned up (%s); a lifecycle rule "
                "(AbortIncompleteMultipartUpload) removes them",
                f"s3://{self.bucket}/{full}",
                _code(exc),
            )
        if aborted:
            log.info(
                "s3://%s/%s: aborted %d incomplete multipart upload(s)", self.bucket, full, aborted
            )
        return aborted


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def s3_errors(where: str) -> Iterator[None]:
    """Turn boto errors into the worker's vocabulary, naming the object."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError, S3UploadFailedError, OSError) as raised:
        exc: BaseException = raised
        if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
            exc = exc.__context__
        if not isinstance(exc, ClientError):
            # botocore quotes the endpoint URL, which may carry credentials.
            raise ServiceUnavailableError(
                redacted(f"{where}: storage unreachable ({exc})")
            ) from None
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = redacted(f"{where}: {code or status} {err.get('Message', '')}".strip())
        if code in THROTTLING_CODES or status in (429, 503):
            raise ServiceUnavailableError(message) from None
        if code == "NoSuchUpload":
            # Our multipart upload was aborted under us: by the next attempt of the same
            # job (``abort_incomplete``), this one's lease having lapsed. Not the object's
            # fault: retried, never dead-lettered.
            raise ServiceUnavailableError(message) from None
        if code in PERMANENT_CODES or status in (400, 403, 404):
            raise PermanentError(message) from None
        raise ServiceUnavailableError(message) from None


def fetch(path: str, dest: Path, params: dict[str, Any]) -> Path:
    """A local file for an input that an earlier job may have published to storage."""
    if not path.startswith("s3://"):
        return Path(path)
    bucket, _, key = path[5:].partition("/")
    store = S3Storage(bucket, endpoint=params.get("endpoint"))
    with s3_errors(path):
        store.client.download_file(bucket, key, str(dest))
    return dest


def storage_for(params: dict[str, Any]) -> Storage:
    target = str(params["storage"])
    if target.startswith("s3://"):
        bucket, _, prefix = target[5:].partition("/")
        return S3Storage(bucket, prefix, endpoint=params.get("endpoint"))
    return LocalStorage(target.removeprefix("file://"))


def scratch_prefix(job_key: str) -> str:
    """The name every scratch folder of ``job_key`` starts with; ``mkdtemp`` adds 8
    characters. Readable, plus a digest of the whole key: two jobs whose names differ only
    where the readable part is cut or rewritten (``a/b_c``, ``a_b/c``) never share it."""
    digest = hashlib.sha256(job_key.encode()).hexdigest()[:16]
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", job_key)[:80]
    return f"mediapipe-scratch-{os.geteuid()}-{key}-{digest}-"


def scratch_dir(job_key: str) -> Path:
    """A new folder for one attempt of one job, only this user can enter (0700, from
    ``mkdtemp``: a fresh, unguessable name). Renditions wait there until uploaded, so in
    the shared temp dir a predictable path would let another user read or swap them, or
    plant a symlink that makes the clean-up delete files elsewhere."""
    root = os.environ.get("MEDIAPIPE_SCRATCH")
    if root:
        Path(root).mkdir(parents=True, exist_ok=True, mode=0o700)
    prefix = scratch_prefix(job_key)
    parent = Path(root or tempfile.gettempdir())
    # mkdtemp adds 8 characters: matching exactly those, another job whose key starts
    # with this one's (``x`` and ``x-2``) is never taken for an earlier attempt.
    for earlier in parent.glob(prefix + "?" * 8):
        _remove_own_dir(earlier)  # what a killed attempt of this job left
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def _remove_own_dir(path: Path) -> None:
    """Remove ``path`` only when it is a real directory of ours: never through a symlink
    or into someone else's folder (rmtree itself does not follow links inside it)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
        shutil.rmtree(path, ignore_errors=True)


def publish(
    result: dict[str, Any],
    storage: Storage,
    scratch: Path,
    before_put: Callable[[], None] = lambda: None,
    keys: Iterable[str] | None = None,
) -> None:
    """Upload every output in ``result`` (whole folders for HLS) and put URIs in place.
    ``before_put`` runs before each upload (the breaker check), so a long publish stops
    calling a store that went down in the middle of it. ``keys``: the result keys that
    hold outputs (``stages.outputs``; default every declared one)."""
    for item in iter_outputs(result, keys):
        local = Path(item["path"])
        if item.get("kind") == "hls":
            package = local.parent
            for f in sorted(p for p in package.rglob("*") if p.is_file()):
                before_put()
                storage.put(f, f.relative_to(scratch).as_posix())
        before_put()
        item["path"] = storage.put(local, local.relative_to(scratch).as_posix())


StageFunction = Callable[[Any, dict[str, Any], dict[str, Any]], dict[str, Any]]


def stores_outputs(fn: StageFunction, outputs: Iterable[str] | None = None) -> StageFunction:
    """Run the stage into a scratch folder and publish its outputs (those under the result
    keys ``outputs``, default every declared output key), when the job's params name a
    storage target; otherwise the stage writes into ``out_dir`` directly. The stage
    contract (``stages.contract.media_stage``) applies it to every stage with outputs."""
    keys = None if outputs is None else tuple(outputs)

    @functools.wraps(fn)
    def wrapper(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        if not params.get("storage"):
            return fn(ctx, params, inputs)
        job_key = getattr(getattr(ctx, "job", None), "id", None) or params.get("name", "job")
        scratch = scratch_dir(str(job_key))
        try:
            # The name is the input's and ends up in upload keys: made a plain file name
            # inside the scratch folder, as every stage does with its own outputs.
            local = output_path(scratch, output_name(str(params.get("name") or "")))
            result = fn(ctx, {**params, "out_dir": str(local)}, inputs)
            service = params.get("service")
            check = getattr(ctx, "check_service", None)

            def before_put() -> None:
                if service and check is not None:
                    check(str(service))

            publish(result, storage_for(params), scratch, before_put, keys)
            return result
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    return wrapper
