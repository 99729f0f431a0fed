"""The fault soak's object store: a moto S3 server in its own process, behind a proxy that
can hold the reply to an upload and name the process that sent it.

``UploadProxy`` forwards TCP to moto and reads the request line of every request on its
way (``PUT /bucket/key`` is a single-request upload, ``PUT ...?partNumber=N&uploadId=...``
a part of a multipart one). ``kill_on(kind, nth, hook)`` arms a rule: the n-th upload
request of that kind (``"put"`` or ``"part"``) from now on, once the server has taken it
and starts to reply, calls ``hook(peer)`` with the client's address and holds the reply a
moment (the harness SIGKILLs the worker behind ``peer`` meanwhile): a worker killed with
an upload in flight, the object or the part stored, the completion never sent.

``check_dag`` is the invariant for a completed DAG that wrote to the store: every output
its manifest (or its job's result) lists is in the bucket, with the size and SHA-256 said
(read back, and in the object's metadata), decodes (images, every pixel; a soak blob, its
seeded bytes), and no incomplete multipart upload is left under the DAG's prefix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "mediapipe",
    "AWS_SECRET_ACCESS_KEY": "mediapipe",
    "AWS_DEFAULT_REGION": "us-east-1",
}
REQUEST_LINE = re.compile(rb"(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/1\.1\r\n")
PART = 5 * 1024 * 1024  # the workers' part size in the soak: S3's smallest


@dataclass
class _Rule:
    kind: str  # "put" | "part"
    left: int  # fires when it reaches 0
    hook: Callable[[tuple[str, int]], None]
    hold: float


class UploadProxy:
    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stats = Counter[str]()
        self.rules: list[_Rule] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill_on(
        self, kind: str, nth: int, hook: Callable[[tuple[str, int]], None], hold: float = 1.0
    ) -> None:
        with self.lock:
            self.rules.append(_Rule(kind, nth, hook, hold))

    def pending_rules(self) -> int:
        with self.lock:
            return len(self.rules)

    def clear_rules(self) -> None:
        with self.lock:
            self.rules.clear()

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, peer = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            armed: list[_Rule] = []  # the rule this connection's next reply fires
            args = (client, upstream, peer[:2], armed)
            threading.Thread(target=self._requests, args=args, daemon=True).start()
            threading.Thread(target=self._replies, args=args, daemon=True).start()

    def _requests(
        self, client: socket.socket, upstream: socket.socket, peer: Any, armed: list[_Rule]
    ) -> None:
        try:
            while data := client.recv(65536):
                for method, path in REQUEST_LINE.findall(data):
                    kind = _upload_kind(method.decode(), path.decode())
                    if kind:
                        self._count(kind, armed)
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, upstream)

    def _count(self, kind: str, armed: list[_Rule]) -> None:
        with self.lock:
            self.stats[kind + " requests"] += 1
            for rule in self.rules:
                if rule.kind == kind:
                    rule.left -= 1
                    if rule.left <= 0:
                        self.rules.remove(rule)
                        armed.append(rule)
                    break

    def _replies(
        self, client: socket.socket, upstream: socket.socket, peer: Any, armed: list[_Rule]
    ) -> None:
        try:
            while data := upstream.recv(65536):
                if armed and not data.startswith(b"HTTP/1.1 100 "):
                    rule = armed.pop()
                    with self.lock:
                        self.stats[f"{rule.kind} replies held"] += 1
                    rule.hook(peer)
                    time.sleep(rule.hold)
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, upstream)


def _upload_kind(method: str, path: str) -> str:
    if method != "PUT":
        return ""
    bucket_and_key = path.split("?", 1)[0].lstrip("/")
    if "/" not in bucket_and_key:
        return ""  # a bucket, not an object
    return "part" if "partNumber=" in path else "put"


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


class SoakS3:
    """moto in server mode on a free port, a bucket, the proxy in front."""

    def __init__(self, home: Path, bucket: str = "soak") -> None:
        self.home, self.bucket = home, bucket
        self.proc: subprocess.Popen[bytes] | None = None
        self.proxy: UploadProxy | None = None

    def start(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "moto.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **CREDENTIALS},
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto did not start in 30 s") from None
                time.sleep(0.05)
        self.port = port
        self.proxy = UploadProxy(port)
        self.client().create_bucket(Bucket=self.bucket)

    def env(self) -> dict[str, str]:
        assert self.proxy is not None
        return {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.proxy.url,
            "MEDIAPIPE_UPLOAD_PART_SIZE": str(PART),
            "MEDIAPIPE_SCRATCH": str(self.home / "scratch"),
        }

    def client(self) -> Any:
        """Straight to moto: the checks are not the proxy's to count or break."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def open_uploads(self, prefix: str = "") -> list[str]:
        """The keys of the multipart uploads started under ``prefix`` and never completed
        or aborted."""
        pages = self.client().get_paginator("list_multipart_uploads")
        return [
            u["Key"]
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix)
            for u in page.get("Uploads", [])
        ]

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    # -- the invariant --------------------------------------------------------------
    def check_dag(
        self, dag_id: str, prefix: str, kind: str, results: dict[str, Any], blob: Any = None
    ) -> list[str]:
        """What is wrong with a completed DAG's outputs under ``prefix`` (``<prefix>/``):
        [] when nothing. ``kind``: "image" (a manifest in the bucket lists the outputs) or
        "blob" (``results``, by job name, hold ``blob`` entries; ``blob(entry)`` the bytes
        it must hold)."""
        wrong: list[str] = []
        client = self.client()
        entries: list[dict[str, Any]] = []
        if kind == "image":
            try:
                raw = client.get_object(Bucket=self.bucket, Key=f"{prefix}/manifest.json")
                doc = json.loads(raw["Body"].read())
            except Exception as exc:
                return [f"DAG {dag_id}: manifest s3://{self.bucket}/{prefix}/ unreadable: {exc}"]
            entries = list(doc.get("outputs", []))
            if not entries:
                wrong.append(f"DAG {dag_id}: its manifest lists no outputs")
        else:
            entries = [r["blob"] for r in results.values() if isinstance(r, dict) and "blob" in r]
            if not entries:
                wrong.append(f"DAG {dag_id}: completed with no blob in its results")
        for o in entries:
            uri = str(o.get("path", ""))
            if not uri.startswith(f"s3://{self.bucket}/{prefix}/"):
                wrong.append(
                    f"DAG {dag_id}: output {uri} is not under s3://{self.bucket}/{prefix}/"
                )
                continue
            key = uri.split("/", 3)[3]
            try:
                head = client.head_object(Bucket=self.bucket, Key=key)
                body = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except Exception as exc:
                wrong.append(f"DAG {dag_id}: output {uri} not in the bucket: {exc}")
                continue
            digest = hashlib.sha256(body).hexdigest()
            if len(body) != o.get("bytes") or digest != o.get("sha256"):
                wrong.append(
                    f"DAG {dag_id}: {uri} holds {len(body)} bytes {digest[:12]}, listed as "
                    f"{o.get('bytes')} {str(o.get('sha256'))[:12]}"
                )
            if head.get("Metadata", {}).get("sha256") != digest:
                wrong.append(f"DAG {dag_id}: {uri}'s sha256 metadata is not its content's")
            problem = _decodes(body, o) if kind == "image" else None
            if kind == "blob" and blob is not None and body != blob(o):
                problem = "not the bytes its job wrote"
            if problem:
                wrong.append(f"DAG {dag_id}: output {uri} does not decode: {problem}")
        left = self.open_uploads(prefix + "/")
        if left:
            wrong.append(f"DAG {dag_id}: incomplete multipart uploads left: {', '.join(left)}")
        return wrong


def _decodes(body: bytes, o: dict[str, Any]) -> str | None:
    import pyvips

    try:
        image = pyvips.Image.new_from_buffer(body, "", access="sequential")
        image.avg()  # decodes every pixel
    except Exception as exc:
        return str(exc)
    if (image.width, image.height) != (o.get("width"), o.get("height")):
        return f"{image.width}x{image.height}, not as the manifest says"
    return None
