"""Liveness is judged on Redis' clock, which stamped the heartbeats, not on this box's."""

from __future__ import annotations

import time
from importlib import resources

import pytest
import redis

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


def _common() -> str:
    return (resources.files("pipeline.scripts") / "includes" / "common.lua").read_text()


@pytest.mark.parametrize(
    ("usec", "ms"),
    [
        ("0", "000"),
        ("5", "000"),
        ("999", "000"),
        ("1000", "001"),
        ("1234", "001"),
        ("56789", "056"),
        ("999999", "999"),
    ],
)
def test_the_transitions_time_text_is_the_servers_milliseconds(
    usec: str, ms: str, r: redis.Redis
) -> None:
    # TIME gives microseconds without padding; the transitions build the millisecond
    # text they write (started, finished, scores) from its digits.
    got = r.eval(f"{_common()}\nreturn ms_text(ARGV[1], ARGV[2])\n", 0, "1796170798", usec)
    assert got == b"1796170798" + ms.encode()


def test_the_clock_text_and_number_agree_with_the_servers_time(r: redis.Redis) -> None:
    before = [int(x) for x in r.time()]
    now, at = r.eval(f"{_common()}\nlocal now, at = clock()\nreturn {{now, at}}\n", 0)
    after = [int(x) for x in r.time()]
    assert int(at) == now  # the text is the number
    assert before[0] * 1000 + before[1] // 1000 <= now <= after[0] * 1000 + after[1] // 1000
