"""A schedule watching an S3 prefix (``s3://bucket/prefix/``): the objects there, each
named by an identity of its content, and which of them the schedule has not handled yet.

**Identity.** The schedule never downloads an object to hash it (the scheduler runs in a
worker node; the DAG's first job fetches and probes the object on a worker anyway), so
the content is identified by what the store says of it:

- ``<sha256 hex>`` when the object carries a full-object SHA-256 checksum (uploaded with
  ``ChecksumAlgorithm=SHA256``, or a multipart upload of checksum type ``FULL_OBJECT``):
  the same bytes under any key, uploaded any way, are one content, and the identity is
  the one a local watched folder uses. The listing says which objects have one; a HEAD
  (``ChecksumMode=ENABLED``) reads it, once per object not seen before.
- ``etag:<ETag>:<size>`` otherwise, from the listing alone. A single-part upload's ETag
  is the MD5 of its bytes, so an identical object uploaded again is not submitted again
  and a changed one is. A multipart upload's ETag depends on its part size, and an
  SSE-KMS object's is not an MD5 at all: the same bytes uploaded again that way look new
  and are submitted again. The identity errs towards work done twice, never towards a
  changed object missed.

Only the prefix's direct entries are watched (a folder's, listed with the delimiter
``/``), page by page; keys ending in ``/`` (folder markers) and dot-names (uploads in
progress by some tools, hidden files) are skipped. An object is visible only once its
upload completed, so no ``--settle`` wait applies.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import SubmissionError
from stages.storage import S3Storage, s3_errors

PAGE_SIZE = 1000  # keys per listing request (S3's own maximum)


@dataclass(frozen=True)
class Found:
    """An object of the watched prefix whose content the schedule has not handled."""

    uri: str
    identity: str  # the content's: sha256 hex, or etag:<etag>:<size>
    listed: str  # etag:<etag>:<size>, as listed (remembered too: no HEAD next tick)


def split_prefix(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix/``; a one-line SubmissionError otherwise."""
    bucket, _, prefix = uri[5:].partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise SubmissionError(f"{uri!r}: expected s3://bucket/prefix/")
    if any(c in uri for c in "*?["):
        raise SubmissionError(f"{uri!r}: an S3 schedule watches a prefix; globs are not supported")
    return bucket, prefix


def is_prefix(uri: str) -> bool:
    """Whether an ``s3://`` path names a prefix to watch (it ends in ``/``, or is a bucket)."""
    return uri.endswith("/") or "/" not in uri[5:]


def unseen(
    uri: str,
    seen: Callable[[list[str]], list[bool]],
    *,
    endpoint: str | None = None,
    page_size: int | None = None,
) -> list[Found]:
    """The objects under the prefix ``uri`` whose content ``seen`` does not know (one per
    content: the same bytes under two keys are found once). ``seen(identities)`` says for
    each whether it was handled. Raises ServiceUnavailableError (the store is down: try
    again next tick) or PermanentError (no such bucket, access denied), naming the prefix."""
    bucket, prefix = split_prefix(uri)
    store = S3Storage(bucket, endpoint=endpoint)
    listed = list(_list(store, bucket, prefix, page_size or PAGE_SIZE))
    if not listed:
        return []
    known_listed = seen([o.listed for o in listed])
    fresh = [o for o, known in zip(listed, known_listed, strict=True) if not known]
    found: dict[str, Found] = {}
    for obj in fresh:
        ident = obj.listed
        if obj.has_sha256:
            ident = _sha256(store, bucket, obj.key) or ident
        found.setdefault(ident, Found(f"s3://{bucket}/{obj.key}", ident, obj.listed))
    if not found:
        return []
    known = seen(list(found))
    return [f for f, k in zip(found.values(), known, strict=True) if not k]


@dataclass(frozen=True)
class _Listed:
    key: str
    listed: str
    has_sha256: bool


def _list(store: S3Storage, bucket: str, prefix: str, page_size: int) -> Iterable[_Listed]:
    pages = store.client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket,
        Prefix=prefix,
        Delimiter="/",
        PaginationConfig={"PageSize": page_size},
    )
    with s3_errors(f"s3://{bucket}/{prefix}"):
        for page in pages:
            for o in page.get("Contents", []):
                key = str(o["Key"])
                name = key[len(prefix) :]
                if not name or name.endswith("/") or name.startswith("."):
                    continue
                etag = str(o.get("ETag", "")).strip('"')
                algorithms = o.get("ChecksumAlgorithm") or []
                yield _Listed(key, f"etag:{etag}:{int(o['Size'])}", "SHA256" in algorithms)


def _sha256(store: S3Storage, bucket: str, key: str) -> str | None:
    """The object's full-object SHA-256 (hex), or None when it has only a composite one."""
    with s3_errors(f"s3://{bucket}/{key}"):
        head: dict[str, Any] = store.client.head_object(
            Bucket=bucket, Key=key, ChecksumMode="ENABLED"
        )
    value = str(head.get("ChecksumSHA256") or "")
    # A multipart upload's composite checksum ("<base64>-<parts>") is not the content's.
    if not value or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None
