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

Only plain TCP, TLS and Unix-socket connections with the hiredis parser take the lane
(``RawLane.of`` answers None otherwise): a Sentinel-managed connection turns a READONLY
reply into a failover in its own ``read_response``, and a caching proxy keeps state
around each call.
"""

from __future__ import annotations

import socket
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


class RawLane:
    __slots__ = ("buf", "conn", "interval", "last", "reader", "sock")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.sock: Any = conn._sock
        self.reader: Any = conn._parser._reader
        kernel_timeouts(self.sock)
        self.buf = bytearray(65536)
        self.interval = float(conn.health_check_interval or 0)
        self.last = time.monotonic()

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
        try:
            sock.sendall(packed)
            reply = reader.gets()
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
