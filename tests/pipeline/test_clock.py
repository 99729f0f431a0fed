"""Liveness is judged on Redis' clock, which stamped the heartbeats, not on this box's."""

from __future__ import annotations

import time

import pytest

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.routing import live_queues


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
def test_a_box_whose_clock_is_off_judges_liveness_right(
    skew: float, monkeypatch: pytest.MonkeyPatch, client: Client, broker: Broker
) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew)
    broker.heartbeat(10.0, {"queues": "default,default@gpu"})
    assert [w["id"] for w in client.workers()] == [broker.worker_id]
    assert "default@gpu" in live_queues(client.redis, client.keys)
    broker.heartbeat(0.2, {"queues": "default,default@gpu"})
    time.sleep(0.3)  # its heartbeat expired on Redis' clock
    assert client.workers() == []
    assert "default@gpu" not in live_queues(client.redis, client.keys)
