"""A TCP proxy in front of Redis that breaks the network on purpose.

Clients connect to the proxy (``proxy.url``); it forwards to the real server (TCP or a
unix socket) and reads both directions as RESP frames, so it knows which reply answers
which request. Faults:

- ``on_reply(function, nth, action)``: the reply to the n-th ``FCALL`` of a transition
  (matched by name, e.g. ``"claim"``), counted over every connection, is delayed by
  ``delay`` seconds (``"delay"``) or lost with its connection (``"drop"``: Redis ran the
  call, the client never hears of it);
- ``on_request(function, nth, hook=...)``: the n-th call of a transition is lost on its
  way, with its connection (Redis never sees it);
- either can call ``hook(peer)`` first, with the client's address ``(host, port)``, so
  a harness can find the process that sent the call (and kill it: a worker killed while
  its claim's reply is in flight, or between a stage's end and its report);
- ``blackhole(seconds)``: nothing passes either way for that long, new connections
  included (held, not refused, as a partitioned network does);
- ``drop_all()``: every open connection is closed at once.

What happened is counted in ``stats`` (replies delayed and dropped, connections cut), so
a harness can report its fault counts. Used by the suite and by the long run in
``benchmarks/fault_soak.py``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse


def frame_end(buf: bytes | bytearray, pos: int = 0) -> int:
    """The end offset of the RESP frame starting at ``pos``, or -1 if incomplete."""
    if pos >= len(buf):
        return -1
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        return -1
    kind = buf[pos : pos + 1]
    head = buf[pos + 1 : nl]
    after = nl + 2
    if kind in (b"$", b"=", b"!"):  # bulk string, verbatim string, bulk error
        n = int(head)
        if n < 0:
            return after
        end = after + n + 2
        return end if end <= len(buf) else -1
    if kind in (b"*", b"~", b">", b"%", b"|"):  # aggregates (maps count pairs)
        n = int(head)
        if n < 0:
            return after
        if kind in (b"%", b"|"):
            n *= 2
        for _ in range(n):
            after = frame_end(buf, after)
            if after < 0:
                return -1
        return after
    return after  # simple string, error, integer, null, double, boolean, big number


def command_of(frame: bytes) -> tuple[str, str]:
    """(command, FCALL function name or '') of a request frame."""
    parts: list[bytes] = []
    pos = frame.find(b"\r\n") + 2
    while pos < len(frame) and len(parts) < 2:
        nl = frame.find(b"\r\n", pos)
        n = int(frame[pos + 1 : nl])
        parts.append(frame[nl + 2 : nl + 2 + n])
        pos = nl + 2 + n + 2
    cmd = parts[0].decode(errors="replace").upper() if parts else ""
    fn = parts[1].decode(errors="replace") if cmd == "FCALL" and len(parts) > 1 else ""
    return cmd, fn


@dataclass
class _Rule:
    function: str
    nth: int
    action: str  # "delay" | "drop" (the reply), "lose" (the request)
    delay: float
    seen: int = 0
    fired: bool = False
    hook: Callable[[tuple[str, int]], object] | None = None


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: FaultProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = proxy._connect_upstream()
        try:
            self.peer: tuple[str, int] = client.getpeername()
        except OSError:
            self.peer = ("", 0)
        self.pending: deque[tuple[str, str, _Rule | None]] = deque()
        self.lock = threading.Lock()
        self.closed = False
        for target, name in ((self._requests, "c2s"), (self._replies, "s2c")):
            threading.Thread(target=target, daemon=True, name=f"proxy-{name}").start()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        self.proxy._forget(self)

    def _requests(self) -> None:
        buf = bytearray()
        try:
            while not self.closed:
                data = self.client.recv(65536)
                if not data:
                    break
                self.proxy._hold()
                buf += data
                pos = 0
                while True:
                    end = frame_end(buf, pos)
                    if end < 0:
                        break
                    cmd, fn = command_of(bytes(buf[pos:end]))
                    rule = self.proxy._match(fn)
                    if rule is not None and rule.action == "lose":
                        # What came before it goes on; it and the connection do not.
                        if pos:
                            self.upstream.sendall(bytes(buf[:pos]))
                        self.proxy._fire(rule, self.peer)
                        self.proxy._count("requests lost")
                        self.close()
                        return
                    self.pending.append((cmd, fn, rule))
                    pos = end
                if pos:
                    self.upstream.sendall(bytes(buf[:pos]))
                    del buf[:pos]
        except (OSError, ValueError):
            pass
        self.close()

    def _replies(self) -> None:
        buf = bytearray()
        try:
            while not self.closed:
                data = self.upstream.recv(65536)
                if not data:
                    break
                self.proxy._hold()
                buf += data
                while True:
                    end = frame_end(buf, 0)
                    if end < 0:
                        break
                    frame = bytes(buf[:end])
                    del buf[:end]
                    rule = self.pending.popleft()[2] if self.pending else None
                    if rule is not None:
                        self.proxy._fire(rule, self.peer)
                    if rule is not None and rule.action == "drop":
                        self.proxy._count("replies dropped")
                        self.close()
                        return
                    if rule is not None and rule.action == "delay":
                        self.proxy._count("replies delayed")
                        time.sleep(rule.delay)
                    self.client.sendall(frame)
        except (OSError, ValueError, IndexError):
            pass
        self.close()


class FaultProxy:
    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._links: set[_Link] = set()
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._hole_until = 0.0
        self.stats: Counter[str] = Counter()
        self._running = True
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def url(self) -> str:
        """The proxy's address, with the upstream URL's database, user and password."""
        up = urlparse(self.upstream_url)
        auth = ""
        if up.username or up.password:
            auth = f"{up.username or ''}:{up.password or ''}@"
        db = up.path.strip("/") or "0"
        if up.scheme == "unix":
            db = dict(p.split("=", 1) for p in up.query.split("&") if "=" in p).get("db", "0")
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    # -- faults ---------------------------------------------------------------------
    def on_reply(
        self,
        function: str,
        nth: int = 1,
        action: str = "drop",
        delay: float = 0.0,
        hook: Callable[[tuple[str, int]], object] | None = None,
    ) -> None:
        """Break the reply to the ``nth`` FCALL of ``function`` from now on; ``hook(peer)``
        is called first, with the address of the client that made the call."""
        with self._lock:
            self._rules.append(_Rule(function, nth, action, delay, hook=hook))

    def on_request(
        self,
        function: str,
        nth: int = 1,
        hook: Callable[[tuple[str, int]], object] | None = None,
    ) -> None:
        """Lose the ``nth`` FCALL of ``function`` from now on, before Redis sees it, and
        close its connection; ``hook(peer)`` is called first."""
        with self._lock:
            self._rules.append(_Rule(function, nth, "lose", 0.0, hook=hook))

    def pending_rules(self) -> int:
        """Rules not fired yet."""
        with self._lock:
            return sum(not r.fired for r in self._rules)

    def clear_rules(self) -> None:
        """Forget the rules not fired yet."""
        with self._lock:
            self._rules = [r for r in self._rules if r.fired]

    def fired(self) -> int:
        with self._lock:
            return sum(r.fired for r in self._rules)

    def blackhole(self, seconds: float) -> None:
        self._hole_until = time.monotonic() + seconds
        self._count("blackholes")

    def drop_all(self) -> None:
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
        self._count("connections cut", len(links))

    def close(self) -> None:
        self._running = False
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_all()

    # -- internals ------------------------------------------------------------------
    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.stats[what] += n

    def _fire(self, rule: _Rule, peer: tuple[str, int]) -> None:
        if rule.hook is not None:
            try:
                rule.hook(peer)
            except Exception:  # a harness's hook must not break the proxy
                self._count("hook errors")

    def _hold(self) -> None:
        while (left := self._hole_until - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))

    def _match(self, function: str) -> _Rule | None:
        if not function:
            return None
        with self._lock:
            for rule in self._rules:
                if rule.fired or not function.endswith("_" + rule.function):
                    continue
                rule.seen += 1
                if rule.seen == rule.nth:
                    rule.fired = True
                    return rule
        return None

    def _connect_upstream(self) -> socket.socket:
        up = urlparse(self.upstream_url)
        if up.scheme == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(up.path)
        else:
            s = socket.create_connection((up.hostname or "127.0.0.1", up.port or 6379))
        return s

    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._hold()
            try:
                link = _Link(self, client)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._links.add(link)

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
