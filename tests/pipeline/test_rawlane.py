"""The transitions' own send-and-read lane (pipeline/rawlane.py) behaves as redis-py does.

The lane bypasses redis-py's layers on the held connection, so each test attacks one of
the things those layers did: a reply longer than one read, an error reply's class, a
connection that died while idle (redis-py's health check), a connection the lane must
not take. Lost and late replies through the lane are test_resend.py's cases.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.rawlane import RawLane, kernel_timeouts
from pipeline.registry import Registry, stage
from pipeline.scripts import Scripts
from tests.faultproxy import FaultProxy


def _work(registry: Registry) -> None:
    @stage("work", registry=registry)
    def work(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        return 1


@pytest.fixture
def lane_client(redis_url: str) -> Iterator[redis.Redis]:
    # One retry for redis-py's health check, which reconnects a dropped connection (a
    # client made from a unix:// URL has none by default and raises, as the lane then does).
    c = redis.Redis.from_url(redis_url, health_check_interval=1, retry=Retry(NoBackoff(), 1))
    yield c
    c.close()


def test_a_transition_on_a_plain_connection_takes_the_lane_not_redis_py(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    _work(registry)
    dag = Dag()
    dag.add("w", "work", {"i": 1})
    client.submit(dag)
    broker = Broker(r, namespace=namespace, registry=registry)
    broker.claim(["default"], 0)  # makes the thread's connection
    conn = broker.scripts._state().conn

    def refused(*_: object, **__: object) -> None:
        raise AssertionError("redis-py's path was taken")

    conn.read_response = refused
    conn.send_packed_command = refused
    (job,), _ = broker.claim(["default"], 1)
    assert job.params == {"i": 1}
    assert broker.complete(job, {"ok": True})[0] is True
    assert client.job(job.id)["result"] == {"ok": True}  # type: ignore[index]


def test_a_reply_many_reads_long_arrives_whole(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    _work(registry)
    big = {"blob": "".join(chr(ord("a") + i % 26) for i in range(300_000)), "n": 7}
    dag = Dag()
    dag.add("w", "work", big)
    client.submit(dag)
    broker = Broker(r, namespace=namespace, registry=registry)
    (job,), _ = broker.claim(["default"], 1)
    assert job.params == big  # 300 KB through a 64 KB read buffer


def test_an_error_reply_is_the_exception_redis_py_gives_for_the_same_call(
    r: redis.Redis, namespace: str
) -> None:
    scripts = Scripts(r)
    prefix = Keys(namespace).prefix
    with pytest.raises(redis.ResponseError) as through_lane:
        scripts.run("complete", prefix, "not a count")
    assert isinstance(scripts._state().lane, RawLane)
    name = scripts._prefix + "complete"
    with pytest.raises(redis.ResponseError) as through_redis_py:
        r.fcall(name, 1, prefix, "not a count", "x:1", "n")
    assert type(through_lane.value) is type(through_redis_py.value)
    assert str(through_lane.value) == str(through_redis_py.value)
    # the connection is still in step: the next call gets its own reply
    assert scripts.run("claim", prefix, "w", "t", 1000, 1, "default") == [-1]


def test_a_connection_killed_while_idle_is_checked_before_the_next_call(
    lane_client: redis.Redis, r: redis.Redis, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py pings a connection idle past its health_check_interval before using it;
    so does the lane, so a connection the server dropped meanwhile costs no call in
    doubt (no resend)."""
    scripts = Scripts(lane_client)
    prefix = Keys(namespace).prefix
    assert scripts.run("claim", prefix, "w", "t", 1000, 1, "default") == [-1]
    held = scripts._state().conn
    mine = [c for c in r.client_list() if c.get("cmd") == "fcall"]
    assert mine, "the lane's connection is not listed"
    for c in mine:
        r.client_kill_filter(_id=c["id"])
    time.sleep(1.3)
    with caplog.at_level(logging.DEBUG, logger="mediapipe.scripts"):
        assert scripts.run("claim", prefix, "w", "t", 1000, 1, "default") == [-1]
    assert "in doubt" not in caplog.text
    assert scripts._state().conn is held  # the same connection object, reconnected
    assert not scripts.in_doubt


def test_only_plain_connections_take_the_lane(redis_url: str) -> None:
    class Wrapped(redis.Connection):
        pass

    assert RawLane.of(Wrapped()) is None
    assert RawLane.of(object()) is None
    pool = redis.Redis.from_url(redis_url).connection_pool
    conn = pool.make_connection()
    assert RawLane.of(conn) is None  # not connected yet
    conn.connect()
    try:
        assert isinstance(RawLane.of(conn), RawLane)
    finally:
        conn.disconnect()


def test_the_lane_waits_in_the_kernel_and_a_late_reply_times_out_there(
    redis_url: str, r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    """The lane's socket blocks, with the client's timeout kept by the kernel (no poll
    before each send and receive). A reply later than that timeout still leaves the call
    in doubt at the timeout, not when the reply comes; the resend gets the one job the
    first send claimed."""
    _work(registry)
    dag = Dag()
    dag.add("w", "work", {"i": 1})
    client.submit(dag)
    keys = Keys(namespace)
    with FaultProxy(redis_url) as proxy:
        c = redis.Redis.from_url(proxy.url, socket_timeout=0.4, socket_connect_timeout=0.4)
        try:
            broker = Broker(c, namespace=namespace, registry=registry)
            assert broker.claim(["elsewhere"], 1)[0] == []  # makes the thread's connection
            sock = broker.scripts._state().conn._sock
            assert sock.gettimeout() is None  # blocking: Python does not poll
            tv = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
            assert struct.unpack("@ll", tv) == (0, 400_000)
            proxy.on_reply("claim", 1, "delay", delay=2.0)
            start = time.monotonic()
            (job,), _ = broker.claim(["default"], 1)
            took = time.monotonic() - start
            assert proxy.fired() == 1
            assert took < 1.5, took  # timed out at 0.4 s and resent; not held for 2 s
        finally:
            c.close()
    assert job.id == dag.job_id("w")
    assert r.zcard(keys.active("default")) == 1 and r.zcard(keys.wait("default")) == 0
    assert client.job(job.id)["attempts"] == 1  # type: ignore[index]


def test_a_tls_or_timeless_socket_keeps_python_s_own_timeout() -> None:
    a, b = socket.socketpair()
    try:
        assert kernel_timeouts(a) is False  # no timeout: nothing to move
        assert a.gettimeout() is None
        b.settimeout(2.5)

        class Wrapped(socket.socket):  # as ssl.SSLSocket is
            pass

        w = Wrapped(fileno=b.detach())
        w.settimeout(2.5)
        assert kernel_timeouts(w) is False and w.gettimeout() == 2.5
        w.close()
    finally:
        a.close()
