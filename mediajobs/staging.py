"""A fleet that cannot read this machine's disk: inputs staged to object storage, outputs
fetched back.

``mediapipe submit photo.jpg --stage s3://bucket/staging`` probes each input here (a bad
file is still refused before anything is queued), uploads it under
``<stage>/inputs/<sha256><suffix>`` (content-addressed: a file staged before is not
uploaded again, a HEAD tells), and submits the DAG with the object's URI as its input and
the SHA-256 the workers check their copy against (``stages.inputs``). With a local
``--out`` the workers publish the outputs under ``<stage>/renders/<submission>/<name>/``
and ``submit --wait`` downloads them into ``--out/<name>/`` at the end, each object's
size and SHA-256 checked; ``mediapipe fetch DAG_ID --out DIR`` does the same later.
Staged inputs are deleted once the DAGs that use them ended (``MEDIAPIPE_STAGE_RETENTION``,
mediajobs/staged_inputs.py).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PermanentError, SubmissionError
from stages.output import atomic_output, output_path, sha256_of
from stages.storage import S3Storage, s3_errors

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Stage:
    """Where a submission stages its inputs and, for a local ``--out``, its outputs."""

    bucket: str
    prefix: str
    endpoint: str | None
    submission: str  # this run's own folder for outputs

    @classmethod
    def parse(cls, target: str, endpoint: str | None) -> Stage:
        if not target.startswith("s3://") or not target[5:].partition("/")[0]:
            raise SubmissionError(f"--stage must be s3://bucket[/prefix], not {target!r}")
        bucket, _, prefix = target[5:].partition("/")
        return cls(bucket, prefix.strip("/"), endpoint, uuid.uuid4().hex[:16])

    def _join(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    @property
    def renders(self) -> str:
        """The ``--out`` the workers publish to when the user's ``--out`` is local."""
        return f"s3://{self.bucket}/{self._join('renders', self.submission)}"

    def input_key(self, sha256: str, path: Path) -> str:
        suffix = path.suffix.lower() if path.suffix[1:].isalnum() else ""
        return self._join("inputs", f"{sha256}{suffix}")


def stage_input(
    path: Path,
    sha256: str,
    stage: Stage,
    progress: ProgressFn | None = None,
    hold: Callable[[str], None] | None = None,
) -> tuple[str, bool]:
    """Upload ``path`` unless the stage holds it already; returns (its URI, uploaded).
    ``hold(uri)`` is called first: the object is kept from retention's sweepers while
    this submit looks for it and writes its DAG (mediajobs/staged_inputs.py)."""
    store = S3Storage(stage.bucket, endpoint=stage.endpoint)
    key = stage.input_key(sha256, path)
    uri = f"s3://{stage.bucket}/{key}"
    if hold is not None:
        hold(uri)
    size = path.stat().st_size
    with s3_errors(uri):
        try:
            head = store.client.head_object(Bucket=stage.bucket, Key=key)
        except Exception as exc:  # botocore's ClientError: 404 means "not there yet"
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            # Without s3:ListBucket a missing key answers 403: the upload then says
            # whether writing is allowed.
            if code not in ("404", "NoSuchKey", "NotFound", "403", "AccessDenied"):
                raise
            head = None
    same = head is not None and head["ContentLength"] == size
    if same and (head or {}).get("Metadata", {}).get("sha256") == sha256:
        return uri, False
    store.put(path, key, progress=progress)
    return uri, True


def fetch_outputs(prefix_uri: str, dest: Path, endpoint: str | None) -> list[Path]:
    """Download every object under ``prefix_uri`` into ``dest`` (the same relative
    layout: renditions, the HLS folder, the manifest), each written under a temporary
    name and checked against the size and SHA-256 it was published with."""
    bucket, _, prefix = prefix_uri[5:].partition("/")
    prefix = prefix.strip("/") + "/"
    store = S3Storage(bucket, endpoint=endpoint)
    got: list[Path] = []
    with s3_errors(prefix_uri):
        pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    if not keys:
        raise PermanentError(f"{prefix_uri}: no outputs there")
    for key in sorted(keys):
        parts = key[len(prefix) :].split("/")
        final = output_path(dest, *parts) if len(parts) == 1 else _nested(dest, parts)
        final.parent.mkdir(parents=True, exist_ok=True)
        with s3_errors(f"s3://{bucket}/{key}"), atomic_output(final) as tmp:
            store.client.download_file(bucket, key, str(tmp))
            head = store.client.head_object(Bucket=bucket, Key=key)
            want = (head.get("Metadata") or {}).get("sha256")
            if tmp.stat().st_size != head["ContentLength"] or (want and sha256_of(tmp) != want):
                raise PermanentError(f"s3://{bucket}/{key}: the download does not match it")
        got.append(final)
    return got


def _nested(dest: Path, parts: list[str]) -> Path:
    folder = dest
    for part in parts[:-1]:
        folder = output_path(folder, part)
    return output_path(folder, parts[-1])


def upload_progress(label: str, size: int) -> ProgressFn | None:
    """A one-line progress display on stderr for a staging upload (a terminal only)."""
    if not sys.stderr.isatty() or size < (8 << 20):
        return None
    seen = [0]

    def show(done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if percent != seen[0]:
            seen[0] = percent
            end = "\n" if done >= total else ""
            sys.stderr.write(f"\rmediapipe: staging {label} {percent:3d}%{end}")
            sys.stderr.flush()

    return show


def outputs_prefix(job_params: dict[str, Any]) -> str | None:
    """Where a DAG's outputs were published: its manifest job's ``storage`` and name."""
    storage, name = job_params.get("storage"), job_params.get("name")
    if not storage or not name or not str(storage).startswith("s3://"):
        return None
    return f"{str(storage).rstrip('/')}/{name}"
