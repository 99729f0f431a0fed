"""Worker-node fixtures: real ``mediapipe worker`` processes against the suite's Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import tests.workers.sample_stages  # noqa: F401  (registers the t.* stages)
from pipeline.client import Client
from pipeline.registry import REGISTRY
from pipeline.server import EmbeddedServer

ROOT = Path(__file__).resolve().parents[2]


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Workers:
    def __init__(self, url: str, namespace: str, client: Client, tmp: Path) -> None:
        self.url, self.namespace, self.client, self.tmp = url, namespace, client, tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        *args: str,
        url: str | None = None,
        ready: bool = True,
        affinity: set[int] | None = None,
    ) -> subprocess.Popen[bytes]:
        """A worker process; ``affinity``: the CPUs it may run on (as ``taskset`` sets)."""
        log = open(self.tmp / f"worker{len(self.procs)}.log", "wb")  # noqa: SIM115
        cmd = [
            sys.executable,
            "-m",
            "mediajobs",
            "--redis",
            url or self.url,
            "--namespace",
            self.namespace,
            "worker",
            "--import",
            "tests.workers.sample_stages",
            "--no-adaptive",
            *args,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        pin = None if affinity is None else (lambda: os.sched_setaffinity(0, affinity))
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pin,
        )
        self.procs.append(proc)
        if ready:
            wait_for(lambda: self.worker_id(proc), 30, "the worker to register")
        return proc

    def worker_id(self, proc: subprocess.Popen[bytes]) -> str | None:
        for w in self.client.workers():
            if w.get("pid") == str(proc.pid):
                return w["id"]
        return None

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.tmp / f"worker{self.procs.index(proc)}.log").read_text(errors="replace")

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


@pytest.fixture
def stage_client(r: redis.Redis, namespace: str) -> Client:
    return Client(r, namespace=namespace, registry=REGISTRY)


@pytest.fixture
def workers(
    redis_url: str, namespace: str, stage_client: Client, tmp_path: Path
) -> Iterator[Workers]:
    w = Workers(redis_url, namespace, stage_client, tmp_path)
    yield w
    w.kill_all()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server of the test's own, to stop and restart."""
    server = EmbeddedServer(tmp_path / "home")
    server.ensure_running()
    yield server
    server.stop()
