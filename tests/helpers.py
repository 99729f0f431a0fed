"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.broker import Broker
from pipeline.client import TERMINAL_DAG_STATES, Client
from pipeline.server import server_binary
from workers.inline import InlineRunner


def run_dag(
    client: Client,
    broker: Broker,
    dag_id: str,
    *,
    queues: tuple[str, ...] = ("default",),
    timeout: float = 30.0,
    prefetch: int = 1,
) -> str:
    """Run an inline runner until the DAG finishes; return its final state."""
    deadline = time.monotonic() + timeout

    def stop() -> bool:
        return client.dag_state(dag_id) in TERMINAL_DAG_STATES or time.monotonic() > deadline

    InlineRunner(broker, queues, prefetch=prefetch, idle_wait=0.05).run(stop)
    state = client.dag_state(dag_id)
    assert state is not None
    return state


def http_status(
    url: str, *, method: str = "GET", body: dict[str, Any] | None = None, token: str | None = None
) -> int:
    """The HTTP status of one JSON request (a POST sends ``body``, ``{}`` by default),
    with the dashboard's bearer token when given; an error status is returned, not raised."""
    data = json.dumps(body or {}).encode() if method == "POST" else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A real filesystem of ``size`` (a tmpfs, e.g. "64k") mounted at ``where``: writing
    more fails with ENOSPC from the kernel. Skips the test where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def server_without_functions(folder: Path) -> Iterator[redis.Redis]:
    """A server of its own with FUNCTION renamed away, as on Redis 6.2, which has no
    functions: the transitions run as scripts through EVALSHA."""
    from tests.sentinel_cell import free_port

    port = free_port()
    proc = subprocess.Popen(
        [server_binary(), "--port", str(port), "--save", "", "--rename-command", "FUNCTION", ""],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        r = redis.Redis(port=port)
        wait_until_serving(r, "the server")
        yield r
        r.close()
    finally:
        proc.kill()
        proc.wait(10)


def wait_until_serving(r: redis.Redis, what: str, timeout: float = 15.0) -> None:
    """Until a server just started answers PING."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r.ping()
            return
        except redis.ConnectionError:
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.05)
