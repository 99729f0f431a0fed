"""The transitions' own send-and-read lane (pipeline/rawlane.py) behaves as redis-py does.

The lane bypasses redis-py's layers on the held connection, so each test attacks one of
the things those layers did: a reply longer than one read, an error reply's class, a
connection that died while idle (redis-py's health check), a connection the lane must
not take. Lost and late replies through the lane are test_resend.py's cases.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import hiredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline import rawlane
from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.rawlane import (
    ENV_SPIN,
    NOT_ENOUGH_DATA,
    PROBE,
    PROBE_EVERY,
    PROBE_EVERY_MOST,
    RawLane,
    kernel_timeouts,
    spin_budget,
    spin_wins,
)
from pipeline.registry import Registry, stage
from pipeline.scripts import Scripts
from tests.faultproxy import FaultProxy


def _work(registry: Registry) -> None:
    @stage("work", registry=registry)
    def work(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        return 1


def _submit_big(client: Client, registry: Registry) -> dict[str, Any]:
    """A one-job DAG whose params are 300 KB: its claim's reply takes many reads."""
    _work(registry)
    big = {"blob": "".join(chr(ord("a") + i % 26) for i in range(300_000)), "n": 7}
    dag = Dag()
    dag.add("w", "work", big)
    client.submit(dag)
    return big


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
    big = _submit_big(client, registry)
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


# -- waiting for a reply by spinning ------------------------------------------------------

# The spin tests need a second CPU (nothing spins on one) and Linux's affinity calls.
needs_two_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="spinning needs two CPUs and sched_setaffinity",
)


@pytest.fixture(autouse=True)
def default_spin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_SPIN, raising=False)  # a setting in the caller's environment


# A reply the server works ARGV[1] loop turns for: ~11 ms for 1,000,000 on this VM, later
# than the spin budget (1 ms), as a Redis far away or a long transition would be. (Counted, not
# timed: a script sees one frozen TIME.)
SLOW = """
local x = 0
for i = 1, tonumber(ARGV[1]) do x = x + i end
return ARGV[2]
"""


def _lane(url: str, **kwargs: Any) -> RawLane:
    conn = redis.Redis.from_url(url, **kwargs).connection_pool.make_connection()
    conn.connect()
    lane = RawLane.of(conn)
    assert lane is not None
    return lane


def _slow(turns: int = 1_000_000, answer: str = "done") -> bytes:
    return hiredis.pack_command(("EVAL", SLOW, 0, str(turns), answer))  # type: ignore[arg-type,no-any-return]


def _spinning(lane: RawLane) -> RawLane:
    """Spin on every call from now on, with no probe to decide otherwise."""
    assert lane.budget > 0, "this machine gave the lane no spin budget"
    lane.spin, lane.calls, lane.every = True, 2 * PROBE, 10**9
    return lane


@pytest.fixture
def no_late_yield(monkeypatch: pytest.MonkeyPatch) -> None:
    """A yield another test's process kept (pytest -n 3 on two CPUs) must not end a spin
    that the test needs to run to its end."""
    monkeypatch.setattr(rawlane, "LONG_YIELD", 10.0)


@pytest.fixture
def spins(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The replies RawLane._spin handed back (NOT_ENOUGH_DATA: it gave up), in order."""
    seen: list[Any] = []
    real = RawLane._spin

    def counted(self: RawLane, sock: Any, reader: Any) -> Any:
        reply = real(self, sock, reader)
        seen.append(reply)
        return reply

    monkeypatch.setattr(RawLane, "_spin", counted)
    return seen


@needs_two_cpus
def test_a_spinning_lane_gets_long_replies_errors_and_late_replies_whole(
    r: redis.Redis,
    namespace: str,
    client: Client,
    registry: Registry,
    spins: list[Any],
    no_late_yield: None,
) -> None:
    big = _submit_big(client, registry)
    broker = Broker(r, namespace=namespace, registry=registry)
    broker.claim(["elsewhere"], 1)  # makes the thread's lane
    lane = _spinning(broker.scripts._state().lane)
    lane.budget = 2.0  # long enough for every read of the reply to be a spun one
    (job,), _ = broker.claim(["default"], 1)
    assert job.params == big  # 300 KB in many reads, all of them spun for
    assert len(spins) == 1 and spins[0] is not NOT_ENOUGH_DATA
    with pytest.raises(redis.ResponseError):
        broker.scripts.run("complete", Keys(namespace).prefix, "not a count")
    assert len(spins) == 2 and isinstance(spins[1], redis.ResponseError)
    # A reply later than the budget: the spin gives up and the blocking read gets it.
    spins.clear()
    lane.budget = 0.0005
    assert lane.call(_slow()) == b"done"
    assert spins == [NOT_ENOUGH_DATA]
    assert lane.call(b"*1\r\n$4\r\nPING\r\n") == b"PONG"  # still in step


@needs_two_cpus
def test_a_spinning_lane_still_times_out_in_the_kernel(redis_url: str) -> None:
    lane = _spinning(_lane(redis_url, socket_timeout=0.3))
    start = time.monotonic()
    with pytest.raises(redis.TimeoutError):  # a reply 1 s away
        lane.call(hiredis.pack_command(("BLPOP", "spin:nothing:" + uuid.uuid4().hex, 1)))
    assert time.monotonic() - start < 0.9  # at the timeout, not when the reply came
    assert lane.conn._sock is None  # dropped: its late reply is never read as another's


@needs_two_cpus
def test_a_connection_closed_while_spinning_raises_connection_error(
    redis_url: str, r: redis.Redis, no_late_yield: None
) -> None:
    lane = _spinning(_lane(redis_url))
    lane.budget = 5.0  # spin for the whole wait: the close must end it
    name = "spin-" + uuid.uuid4().hex[:8]
    assert lane.call(hiredis.pack_command(("CLIENT", "SETNAME", name))) == b"OK"
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            lane.call(hiredis.pack_command(("BLPOP", "spin:nothing:" + name, 5)))
        except BaseException as exc:
            raised.append(exc)

    # Killed from another process: a thread of this one would take the GIL from the
    # spinner, whose yield would then come back late and end the spin on its own.
    killer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, redis\n"
            "time.sleep(0.3)\n"
            "r = redis.Redis.from_url(sys.argv[1])\n"
            "assert r.client_kill_filter(_id=next("
            "c['id'] for c in r.client_list() if c.get('name') == sys.argv[2])) == 1",
            redis_url,
            name,
        ]
    )
    waiter = threading.Thread(target=wait, daemon=True)  # a spin that never ends stays
    waiter.start()
    assert killer.wait(30) == 0
    waiter.join(2.0)  # when it closed, not once the spin or the BLPOP gave up
    assert not waiter.is_alive(), "the spin did not see the connection close"
    assert len(raised) == 1 and isinstance(raised[0], redis.ConnectionError), raised


@needs_two_cpus
def test_a_lane_whose_replies_come_later_than_the_budget_stops_spinning(
    redis_url: str, spins: list[Any]
) -> None:
    """A probe times PROBE replies blocking and PROBE spinning; replies slower than the
    budget (a Redis far away) make spinning lose, and the next probe comes twice as
    late: the budget is not burnt on every call."""
    lane = _lane(redis_url)
    assert lane.budget > 0 and lane.spin is False
    for _ in range(2 * PROBE):
        lane.call(_slow())
    # The probe's second half spun and gave up each time (or ended early, when a busy
    # CPU kept one of its yields: under a loaded test run).
    assert 1 <= len(spins) <= PROBE and set(spins) == {NOT_ENOUGH_DATA}
    assert lane.spin is False
    assert lane.every == 2 * PROBE_EVERY
    spins.clear()
    for _ in range(50):
        lane.call(b"*1\r\n$4\r\nPING\r\n")
    assert spins == []  # no spinning until the next probe


def test_a_probe_decides_once_from_its_own_samples(redis_url: str) -> None:
    lane = _lane(redis_url)
    lane.budget, lane.every = 0.001, 4 * PROBE_EVERY

    def probe(blocked: float, spun: float, late_yield_at: int | None = None) -> None:
        lane.waits = ([], [])
        for call in range(2 * PROBE):
            lane.calls = call
            if call == late_yield_at:
                lane._lost()  # as _spin does when a yield came back late
            lane._probed(call, blocked if call < PROBE else spun)
            if lane.calls != call:
                break  # the late yield ended the probe

    probe(90e-6, 30e-6)  # spun sooner: spin, and probe again at the least interval
    assert lane.spin is True and lane.every == PROBE_EVERY
    probe(90e-6, 95e-6)  # no sooner: stop, and the next probe twice as far
    assert lane.spin is False and lane.every == 2 * PROBE_EVERY
    assert lane.calls == 2 * PROBE
    # A late yield on the probe's last call decides it, once: no second doubling, and the
    # samples (which would win) do not undo it.
    probe(90e-6, 30e-6, late_yield_at=2 * PROBE - 1)
    assert lane.spin is False and lane.every == 4 * PROBE_EVERY


def test_a_lane_whose_replies_come_sooner_spun_keeps_spinning(redis_url: str) -> None:
    assert spin_wins([90e-6] * PROBE, [30e-6] * PROBE, 250e-6)
    assert not spin_wins([90e-6] * PROBE, [95e-6] * PROBE, 250e-6)  # no sooner
    assert not spin_wins([900e-6] * PROBE, [300e-6] * PROBE, 250e-6)  # past the budget
    # one preempted call does not decide
    assert spin_wins([90e-6] * PROBE, [30e-6] * (PROBE - 1) + [0.01], 250e-6)


@needs_two_cpus
def test_a_yield_another_task_kept_stops_spinning_at_once(redis_url: str) -> None:
    """A spinner yields between tries. A CPU-bound task on the same CPU then keeps the
    CPU for a time slice: the spinner would only take turns from the others, so the
    lane stops spinning within that call and puts its next probe further off."""
    lane = _spinning(_lane(redis_url))
    cpus = os.sched_getaffinity(0)
    cpu = min(cpus)
    hog = subprocess.Popen(
        [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"]
    )
    try:
        os.sched_setaffinity(0, {cpu})
        time.sleep(0.2)  # the hog is running
        for _ in range(20):
            assert lane.call(_slow()) == b"done"
            if not lane.spin:
                break
    finally:
        os.sched_setaffinity(0, cpus)
        hog.kill()
        hog.wait()
    assert lane.spin is False
    assert lane.every == PROBE_EVERY_MOST  # twice _spinning's 10**9, held to the most


@needs_two_cpus
def test_the_spin_budget_comes_from_the_environment_and_is_none_on_one_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_SPIN, "0")
    assert spin_budget() == 0.0
    monkeypatch.setenv(ENV_SPIN, "100")
    assert spin_budget() == pytest.approx(100e-6)
    for bad in ("fast", "inf", "nan", "-5", "100001"):  # past 0.1 s it would put off the timeout
        monkeypatch.setenv(ENV_SPIN, bad)
        with pytest.raises(ValueError, match=f"MEDIAPIPE_SPIN_US='{bad}'"):
            spin_budget()
    monkeypatch.delenv(ENV_SPIN)
    one = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "from pipeline.rawlane import spin_budget; print(spin_budget())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(one.stdout) == 0.0
