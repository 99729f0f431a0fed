"""A multipart upload killed half-way is aborted by the next upload of its key.

A process SIGKILLed during a multipart upload leaves the upload open in the bucket: its
parts are stored (and billed) but no listing or GET shows them, until someone aborts it.
Here a real process uploads a file of three parts through the proxy, slowed down, and is
SIGKILLed once moto holds its first part; a second process uploads the same key: the
object is complete and verified, and no incomplete upload of the key is left. An open
upload of another key (one that starts with this key) is not touched. And an upload still
running when the next one of its key starts (an attempt whose lease lapsed) fails as
retryable (ServiceUnavailableError), not as a permanent error that would dead-letter it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import ServiceUnavailableError
from stages.storage import s3_errors
from tests.storage.conftest import S3

ROOT = Path(__file__).resolve().parents[2]
PART = 5 * 1024 * 1024  # S3's smallest part

UPLOAD = """
import sys
from pathlib import Path
from stages.storage import S3Storage
S3Storage.MULTIPART = int(sys.argv[3])
try:
    print(S3Storage(sys.argv[1]).put(Path(sys.argv[2]), sys.argv[4]), flush=True)
except Exception as exc:
    print(type(exc).__name__, exc, flush=True)
    sys.exit(3)
"""


def _upload(s3: S3, src: Path, key: str, *, direct: bool = False) -> subprocess.Popen[str]:
    """A process uploading ``src`` to ``key``: through the proxy, or straight to moto."""
    env = {**os.environ, **s3.env, "PYTHONPATH": str(ROOT)}
    env.pop("MEDIAPIPE_UPLOAD_PART_SIZE", None)
    if direct:
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{s3.proxy.target}"
    return subprocess.Popen(
        [sys.executable, "-c", UPLOAD, s3.bucket, str(src), str(PART), key],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _open_uploads(s3: S3, prefix: str) -> list[tuple[str, str]]:
    page = s3.client().list_multipart_uploads(Bucket=s3.bucket, Prefix=prefix)
    return [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]


def test_a_killed_multipart_upload_is_aborted_by_the_next_upload_of_its_key(
    s3: S3, tmp_path: Path
) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(2 * PART + 123_456))  # three parts: 5 MiB, 5 MiB, the rest
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    key = "renders/big/big.bin"
    client = s3.client()  # straight to moto, not through the proxy
    other = client.create_multipart_upload(Bucket=s3.bucket, Key=key + ".other")["UploadId"]

    s3.proxy.delay = 0.4  # every reply chunk held: the upload takes seconds
    first = _upload(s3, src, key)
    deadline = time.monotonic() + 60
    parts: list[dict[str, object]] = []
    while not parts:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first upload stored no part in 60 s"
        mine = [u for k, u in _open_uploads(s3, key) if k == key]
        if mine:
            parts = client.list_parts(Bucket=s3.bucket, Key=key, UploadId=mine[0]).get("Parts", [])
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    assert [k for k, _ in _open_uploads(s3, key) if k == key] != [], "nothing was left open"
    assert "Contents" not in client.list_objects_v2(Bucket=s3.bucket, Prefix=key + ".")
    assert "Contents" not in client.list_objects_v2(Bucket=s3.bucket, Prefix=key)

    s3.proxy.delay = 0.0
    second = _upload(s3, src, key)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert out.strip() == f"s3://{s3.bucket}/{key}"
    head = client.head_object(Bucket=s3.bucket, Key=key)
    assert head["ContentLength"] == src.stat().st_size
    assert head["Metadata"]["sha256"] == digest
    body = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest
    # The killed upload is gone; the other key's open upload is not the second one's to end.
    assert _open_uploads(s3, key) == [(key + ".other", other)]
    uploads = [line for line in s3.proxy.lines if line[0] == "POST" and "uploads" in line[1]]
    assert len(uploads) >= 2, "the second upload was not multipart"


def test_an_upload_aborted_under_it_by_the_next_upload_of_its_key_is_retryable(
    s3: S3, tmp_path: Path
) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * PART + 4321))  # four parts
    key = "renders/lapsed/big.bin"
    client = s3.client()
    s3.proxy.delay = 1.0  # the first upload: a second per reply, four parts
    first = _upload(s3, src, key)
    deadline = time.monotonic() + 60
    while not [k for k, _ in _open_uploads(s3, key) if k == key]:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first upload did not start in 60 s"
        time.sleep(0.05)
    second = _upload(s3, src, key, direct=True)  # the retry, at full speed
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, (out, err)
    out, err = first.communicate(timeout=120)
    # Its next part found its upload gone: retryable, never completed over the retry's
    # object. (moto answers a part of an aborted upload with a 500, S3 with a 404
    # NoSuchUpload: both are retryable, the test below checks the second.)
    assert first.returncode == 3, (out, err)
    assert out.startswith("ServiceUnavailableError"), (out, err)
    head = client.head_object(Bucket=s3.bucket, Key=key)
    assert head["ContentLength"] == src.stat().st_size
    assert head["Metadata"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert _open_uploads(s3, key) == []


def test_no_such_upload_is_retryable_not_permanent() -> None:
    """S3's answer to a part or completion of an upload aborted meanwhile (a 404, which
    would otherwise dead-letter the job): the store is fine, the attempt is retried."""
    from botocore.exceptions import ClientError

    response = {
        "Error": {"Code": "NoSuchUpload", "Message": "The specified upload does not exist."},
        "ResponseMetadata": {"HTTPStatusCode": 404},
    }
    with pytest.raises(ServiceUnavailableError, match="NoSuchUpload"), s3_errors("s3://b/k"):
        raise ClientError(response, "UploadPart")
