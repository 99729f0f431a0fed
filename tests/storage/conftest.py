"""A real S3-compatible server (moto in server mode) behind a proxy the tests can break."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "mediapipe",
    "AWS_SECRET_ACCESS_KEY": "mediapipe",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(port: int, tmp: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(tmp / f"moto-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto server did not start")


REQUEST_LINE = re.compile(rb"(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/1\.1\r\n")


class FlakyProxy:
    """Forwards TCP to the S3 server, counting HTTP requests. ``down()`` makes the endpoint
    sick (connections are accepted and dropped at once, counted as calls); ``up()`` heals
    it. moto keeps its objects all along, so the bucket can be checked afterwards."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.refused = 0
        self.lines: list[tuple[str, str]] = []  # (method, path) of every request seen
        self._down = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = False
        self.delay = 0.0  # seconds slept per chunk sent back to clients (a slow store)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls(self) -> int:
        with self._lock:
            return self.requests + self.refused

    def down(self) -> None:
        with self._lock:
            self._down = True
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()

    def up(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        self._stop = True
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._down:
                    self.refused += 1
                    client.close()
                    continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update({client, upstream})
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    found = REQUEST_LINE.findall(data)
                    if found:
                        with self._lock:
                            self.requests += len(found)
                            self.lines += [(m.decode(), p.decode()) for m, p in found]
                elif self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()


@dataclass
class S3:
    proxy: FlakyProxy
    env: dict[str, str]
    bucket: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.proxy.target}",
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )


@pytest.fixture(scope="session")
def moto_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    proc = start_moto(port, tmp_path_factory.mktemp("moto"))
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3(moto_port: int, namespace: str, tmp_path: Path) -> Iterator[S3]:
    proxy = FlakyProxy(moto_port)
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": proxy.url, "MEDIAPIPE_SCRATCH": str(tmp_path / "scr")}
    store = S3(proxy, env, f"media-{namespace}")
    store.client().create_bucket(Bucket=store.bucket)
    yield store
    proxy.close()


from tests.cli.conftest import Cli, cli, fleet_cli  # noqa: E402,F401  (shared fixtures)
from tests.workers.conftest import stage_client, workers  # noqa: E402,F401


@pytest.fixture
def storage_cli(fleet_cli: Cli, s3: S3) -> Cli:  # noqa: F811
    fleet_cli.env.update(
        s3.env,
        MEDIAPIPE_BREAKER_FAILURES="2",
        MEDIAPIPE_BREAKER_COOLDOWN="5",
        MEDIAPIPE_BREAKER_PROBE_LEASE="20",
    )
    return fleet_cli
