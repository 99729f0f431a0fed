"""Fixtures for the media stages: the sample media in fixtures/ and a recording ctx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.registry import REGISTRY

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


class RecordingContext:
    """A stand-in for JobContext that records progress reports (stages only report)."""

    def __init__(self, attempt: int = 1, tags: frozenset[str] = frozenset()) -> None:
        self.reports: list[tuple[float, str, dict[str, Any]]] = []
        self.attempt = attempt
        self.tags = tags  # the capabilities the job was routed for

    def progress(self, percent: float, message: str = "", **fields: Any) -> None:
        self.reports.append((percent, message, fields))


@pytest.fixture
def ctx() -> RecordingContext:
    return RecordingContext()


@pytest.fixture(scope="session")
def media() -> Path:
    if not (FIXTURES / "clip.mp4").exists():
        pytest.fail("fixtures missing: run python fixtures/make_fixtures.py")
    return FIXTURES


@pytest.fixture(scope="session")
def expected() -> dict[str, Any]:
    return dict(json.loads((FIXTURES / "expected.json").read_text()))


@pytest.fixture
def media_client(r: redis.Redis, namespace: str) -> Client:
    """A client that knows the media stages (the global registry)."""
    return Client(r, namespace=namespace, registry=REGISTRY)


@pytest.fixture
def media_broker(r: redis.Redis, namespace: str) -> Broker:
    return Broker(r, namespace=namespace, registry=REGISTRY, lease=30)
