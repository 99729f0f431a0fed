"""The fleet-wide circuit breaker transitions, one Lua script per decision."""

from __future__ import annotations

import time

import redis

from pipeline.breaker import BreakerPolicy, ServiceBreakers


def _breakers(r: redis.Redis, namespace: str, **policy: float) -> ServiceBreakers:
    return ServiceBreakers(r, namespace=namespace, policy=BreakerPolicy(**policy))  # type: ignore[arg-type]


def test_opens_after_failures_in_a_row_and_a_success_resets_the_count(
    r: redis.Redis, namespace: str
) -> None:
    b = _breakers(r, namespace, failures=3, cooldown=10)
    assert b.outcome("s3", False) == "closed"
    assert b.outcome("s3", False) == "closed"
    assert b.outcome("s3", True) == "closed"  # not in a row any more
    for _ in range(2):
        b.outcome("s3", False)
    assert b.outcome("s3", False) == "open"
    gate = b.gate("s3")
    assert not gate.allowed and gate.state == "open" and 9 < gate.retry_in <= 10


def test_a_single_probe_after_the_cool_down_then_closed_on_success(
    r: redis.Redis, namespace: str
) -> None:
    b = _breakers(r, namespace, failures=1, cooldown=0.2, probe_lease=5)
    b.outcome("s3", False)
    assert not b.gate("s3").allowed
    time.sleep(0.25)
    probe = b.gate("s3")
    assert probe.allowed and probe.state == "half_open"
    others = [b.gate("s3") for _ in range(5)]  # every other caller, any node, waits
    assert not any(g.allowed for g in others)
    assert b.outcome("s3", True) == "closed"
    assert b.gate("s3").allowed


def test_a_failed_probe_opens_it_again(r: redis.Redis, namespace: str) -> None:
    b = _breakers(r, namespace, failures=1, cooldown=0.2)
    b.outcome("s3", False)
    time.sleep(0.25)
    assert b.gate("s3").state == "half_open"
    assert b.outcome("s3", False) == "open"
    assert not b.gate("s3").allowed


def test_a_probe_whose_worker_died_is_replaced_after_its_lease(
    r: redis.Redis, namespace: str
) -> None:
    b = _breakers(r, namespace, failures=1, cooldown=0.1, probe_lease=0.2)
    b.outcome("s3", False)
    time.sleep(0.15)
    assert b.gate("s3").allowed  # this probe never reports back
    assert not b.gate("s3").allowed
    time.sleep(0.25)
    assert b.gate("s3").allowed


def test_the_service_rate_limit_is_shared(r: redis.Redis, namespace: str) -> None:
    one = _breakers(r, namespace, rate_max=3, rate_window=0.5)
    two = _breakers(r, namespace, rate_max=3, rate_window=0.5)  # another node
    verdicts = [g.allowed for g in (one.gate("s3"), two.gate("s3"), one.gate("s3"), two.gate("s3"))]
    assert verdicts == [True, True, True, False]
    limited = one.gate("s3")
    assert limited.state == "rate_limited" and 0 < limited.retry_in <= 0.5
    time.sleep(0.55)
    assert two.gate("s3").allowed


def test_state_is_visible(r: redis.Redis, namespace: str) -> None:
    b = _breakers(r, namespace, failures=1, cooldown=30)
    b.outcome("s3:minio/media", False)
    assert b.states()["s3:minio/media"]["state"] == "open"
    state, left = b.state("s3:minio/media")
    assert state == "open" and 28 < left <= 30
