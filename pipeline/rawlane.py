"""One command and its reply on a redis-py connection's own socket and hiredis reader.

A busy worker makes one transition call per job on a connection it holds (see
pipeline/scripts). redis-py's ``send_packed_command`` and ``read_response`` wrap the
socket in four layers (health check, parser dispatch, push-message handling, error
mapping): ~10,000 of the ~130,000 instructions a worker's Python spent on a no-op job.
The lane does the same work on the same objects with none of the layers:

- the reply is parsed by the connection's own hiredis reader, so error replies arrive
  as the same redis-py exception classes;
- a connection idle longer than its ``health_check_interval`` is checked with redis-py's
  PING first, as ``send_packed_command`` would;
- a failure disconnects the connection and raises what redis-py raises (a timeout as
  ``TimeoutError``, a dropped socket as ``ConnectionError``), so the caller's resend
  logic sees no difference;
- the socket timeout is kept by the kernel (``SO_RCVTIMEO``, ``SO_SNDTIMEO``) on a
  blocking socket, not by Python, which polls before every send and every receive of a
  socket with a timeout: two syscalls a call fewer. In 58 alternating pairs of 2-worker
  no-op drains that ran 1.056x the rate (median; faster in 38; benchmarks/drain_ab.py, see
  docs/benchmarks.md). A TLS socket keeps Python's timeout (its reads are the SSL
  layer's). redis-py's own calls on the connection (the health check's PING) see the
  same timeout, as a ``ConnectionError`` (EAGAIN) rather than a ``TimeoutError``: both
  leave a transition in doubt alike.

A reply is waited for by spinning on a non-blocking receive (yielding the CPU to any
other runnable task between tries) for up to ``MEDIAPIPE_SPIN_US`` (1,000 us), then
blocking as before. Blocking lets the CPU go idle, and a reply that arrives then waits
for the CPU to wake: on this project's VM, a guest whose idle vCPU halts at once
(``haltpoll.guest_halt_poll_ns=0``), that wake-up was ~55 us of an 85 us PING round trip,
as long as a one-job submit's whole FCALL. Spinning costs CPU only while a reply is due,
and never more than the budget a call; but where the CPU is short (more busy processes
than cores, a Redis on the same core) a spinner takes turns from the very server it waits
for, and where Redis is far away the budget is burnt for nothing. So each lane measures:
every ``PROBE_EVERY`` calls it times ``PROBE`` replies waited for each way, and spins
until the next probe only if the spun replies came sooner (medians) and within the
budget; a yield that another task kept for a time slice stops the spinning at once; each
lost probe puts the next one twice as far off. Nothing spins on one CPU, and
``MEDIAPIPE_SPIN_US=0`` never spins. Figures: docs/benchmarks.md.

Only plain TCP, TLS and Unix-socket connections with the hiredis parser take the lane
(``RawLane.of`` answers None otherwise): a Sentinel-managed connection turns a READONLY
reply into a failover in its own ``read_response``, and a caching proxy keeps state
around each call.
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import time
from typing import Any

import redis

_HiredisParser: Any
NOT_ENOUGH_DATA: Any
PushNotification: Any
try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser
except ImportError:  # a redis-py without the hiredis parser module: the lane stays off
    _HiredisParser = NOT_ENOUGH_DATA = None
try:
    from hiredis import PushNotification
except ImportError:  # hiredis < 3.2 has no push type (and no RESP3 pushes to mind)
    PushNotification = None

_PLAIN = {redis.Connection, redis.SSLConnection, redis.UnixDomainSocketConnection}
_CLOSED = "Connection closed by server."


def kernel_timeouts(sock: Any) -> bool:
    """Move a plain socket's timeout from Python's poll into the kernel (see above);
    False, and nothing changed, for a TLS socket or one without a timeout."""
    t = sock.gettimeout()
    if type(sock) is not socket.socket or not t:
        return False
    tv = struct.pack("@ll", int(t), int((t - int(t)) * 1_000_000))  # struct timeval
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    except OSError:
        return False
    sock.settimeout(None)
    return True


ENV_SPIN = "MEDIAPIPE_SPIN_US"
# A busy worker's replies, queued behind the other worker's calls, took 60-290 us (probe
# medians); 2-worker drains (benchmarks/drain_ab.py) read 1.11-1.15x with 250-500 us of
# budget, 1.44x with 1,000.
SPIN_US = 1000
SPIN_US_MOST = 100_000
PROBE = 16  # replies timed each way per probe
# Calls from one probe to the next: doubled each time spinning loses, up to the most (a
# spun probe on a contended CPU costs a time slice a call), and back to the least when
# it wins.
PROBE_EVERY, PROBE_EVERY_MOST = 1024, 65536
# A yield that came back this late gave the CPU to a task that kept it for a time slice
# (Linux's is milliseconds): the CPU is contended, where a spinner only slows the others.
# Then spinning stops until the next probe. (A yield to the very server it waits for
# comes back within a call's time, well under this. A thread of this process that held
# the GIL for its switch interval, 5 ms, ends the spinning the same way.)
LONG_YIELD = 0.0005
_DONTWAIT = socket.MSG_DONTWAIT
_sched_yield = os.sched_yield


def _cpus() -> int:
    """The CPUs this process may run on (macOS has no affinity: all of them)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def spin_budget() -> float:
    """Seconds a call may spin for its reply (``MEDIAPIPE_SPIN_US``; 0: never). Never on
    one CPU: the reply of a server there needs the very CPU a spinner holds. (A container
    held to one CPU's worth by a cgroup quota on a larger host still counts its host's
    CPUs; there the probes and the late-yield check are what stop the spinning.)"""
    raw = os.environ.get(ENV_SPIN, "").strip()
    try:
        us = float(raw) if raw else SPIN_US
    except ValueError:
        us = float("nan")
    # The blocking read's socket timeout starts after the spin: a spin of seconds would
    # put off the timeout, and with it the resend of a call in doubt.
    if not 0 <= us <= SPIN_US_MOST:
        raise ValueError(
            f"{ENV_SPIN}={raw!r} is not a number of microseconds from 0 to {SPIN_US_MOST:,}"
        )
    if _cpus() < 2:
        return 0.0
    return us / 1e6


def spin_wins(blocked: list[float], spun: list[float], budget: float) -> bool:
    """Whether to spin until the next probe: the spun replies (their waits, in seconds)
    came sooner than the blocked ones and within the budget. Medians, so one preempted
    call does not decide."""
    mid = statistics.median(spun)
    return mid < budget and mid < statistics.median(blocked)


class RawLane:
    __slots__ = (
        "budget",
        "buf",
        "calls",
        "conn",
        "every",
        "interval",
        "last",
        "reader",
        "sock",
        "spin",
        "waits",
    )

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.sock: Any = conn._sock
        self.reader: Any = conn._parser._reader
        kernel_timeouts(self.sock)
        self.buf = bytearray(65536)
        self.interval = float(conn.health_check_interval or 0)
        self.last = time.monotonic()
        # Spinning needs a non-blocking receive on the socket itself (not TLS's layer).
        self.budget = spin_budget() if type(self.sock) is socket.socket else 0.0
        self.spin = False  # until the first probe has measured both ways
        self.calls = -1
        self.every = PROBE_EVERY
        self.waits: tuple[list[float], list[float]] = ([], [])  # (blocked, spun) of a probe

    @staticmethod
    def of(conn: Any) -> RawLane | None:
        """A lane on ``conn`` (connected), or None where only redis-py's path will do."""
        if _HiredisParser is None or type(conn) not in _PLAIN:
            return None
        parser = getattr(conn, "_parser", None)
        if not isinstance(parser, _HiredisParser) or getattr(parser, "_reader", None) is None:
            return None
        if getattr(conn, "_sock", None) is None:
            return None
        return RawLane(conn)

    def call(self, packed: bytes) -> Any:
        """Send ``packed`` and return its reply; an error reply is returned, not raised."""
        now = time.monotonic()
        if self.interval and now - self.last > self.interval:
            self._check_health()
        elif self.conn._sock is not self.sock:  # redis-py's path used it in between
            self._refresh()
        self.last = now
        sock, reader = self.sock, self.reader
        spin, probe, sent = self.spin, -1, 0.0
        if self.budget:
            self.calls = probe = self.calls + 1
            if probe >= self.every:
                self.calls = probe = 0
            if probe < 2 * PROBE:  # a probe: PROBE calls blocking, then PROBE spinning
                if probe == 0:
                    self.waits = ([], [])  # nothing from a call that raised, or another socket
                spin, sent = probe >= PROBE, time.perf_counter()
            else:
                probe = -1
        try:
            sock.sendall(packed)
            reply = reader.gets()
            if spin and reply is NOT_ENOUGH_DATA:
                reply = self._spin(sock, reader)
            while reply is NOT_ENOUGH_DATA:
                n = sock.recv_into(self.buf)
                if not n:
                    raise redis.ConnectionError(_CLOSED)
                reader.feed(self.buf, 0, n)
                reply = reader.gets()
        except (TimeoutError, BlockingIOError):  # Python's timeout, or the kernel's (EAGAIN)
            self.conn.disconnect()
            raise redis.TimeoutError("Timeout on the socket") from None
        except OSError as exc:
            self.conn.disconnect()
            raise redis.ConnectionError(f"Error while reading from socket: {exc.args}") from exc
        except BaseException:
            self.conn.disconnect()
            raise
        if probe >= 0:
            self._probed(probe, time.perf_counter() - sent)
        if type(reply) is list:
            if reply and isinstance(reply[0], redis.ConnectionError):
                self.conn.disconnect()
                raise reply[0]
            return reply
        if isinstance(reply, redis.ConnectionError):  # LOADING, MASTERDOWN, ...
            self.conn.disconnect()
            raise reply
        if PushNotification is not None and type(reply) is PushNotification:
            # nothing on this connection subscribes or tracks: drop it, the caller resends
            self.conn.disconnect()
            raise redis.ConnectionError("unexpected push message on a transition's connection")
        return reply

    def _spin(self, sock: Any, reader: Any) -> Any:
        """The reply, or NOT_ENOUGH_DATA once the budget is spent: receive without
        blocking, and between tries let any runnable task have the CPU."""
        buf, clock = self.buf, time.perf_counter
        until = clock() + self.budget
        reply = NOT_ENOUGH_DATA
        while reply is NOT_ENOUGH_DATA:
            try:
                n = sock.recv_into(buf, 0, _DONTWAIT)
            except BlockingIOError:
                t = clock()
                if t > until:
                    break
                _sched_yield()
                if clock() - t > LONG_YIELD:  # a busy task had the CPU: stop spinning
                    self._lost()
                    break
                continue
            if not n:
                raise redis.ConnectionError(_CLOSED)
            reader.feed(buf, 0, n)
            reply = reader.gets()
        return reply

    def _probed(self, call: int, waited: float) -> None:
        """Record the wait of a probe's call (its number in the probe); decide at the end,
        unless a late yield has decided already (``_lost`` moved ``calls`` past it)."""
        blocked, spun = self.waits
        (spun if call >= PROBE else blocked).append(waited)
        if call == 2 * PROBE - 1 == self.calls and blocked:
            if spin_wins(blocked, spun, self.budget):
                self.spin, self.every = True, PROBE_EVERY
            else:
                self._lost()

    def _lost(self) -> None:
        """Spinning lost: stop until the next probe, which comes later each time."""
        self.spin = False
        self.every = min(self.every * 2, PROBE_EVERY_MOST)
        self.calls = max(self.calls, 2 * PROBE)  # a probe still spinning ends here

    def _check_health(self) -> None:
        # redis-py's own check (PING, reconnecting on failure) may replace the socket
        # and the reader; its clock for the next check is stale, so it always pings here.
        self.conn.check_health()
        self._refresh()

    def _refresh(self) -> None:
        if self.conn._sock is None:
            self.conn.connect()
        self.sock, self.reader = self.conn._sock, self.conn._parser._reader
        kernel_timeouts(self.sock)
