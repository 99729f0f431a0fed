"""Redis or Valkey Cluster: ``redis+cluster://[user:pass@]host:port[,host:port...]``
(``rediss+cluster://`` for TLS; the hosts are seeds, any nodes of the cluster).

Every key of a namespace carries the hash tag ``{ns}``, so a namespace is one hash slot
and lives on one master. A client of a namespace therefore needs one node, not a cluster
client: its connections ask the cluster (``CLUSTER SLOTS``, seeds first) which master
owns the namespace's slot and connect there. Every transition already names a key of
the slot (the prefix ``{ns}:``, its ``KEYS[1]``), so the server routes and checks it as
the scripting contract expects. A large deployment scales by namespaces: one per tenant
or product, spread over the masters.

The slot can move: a master fails over to its replica, or an operator migrates the
slot (``valkey-cli --cluster reshard``, or ``CLUSTER SETSLOT``/``MIGRATE`` by hand).
A command sent to the wrong node is answered ``MOVED``, ``ASK`` or ``TRYAGAIN`` without
being run; the connection turns that answer into a ``SlotMovedError``, a
``redis.ConnectionError``, so every caller treats it as the short outage it is (the
transitions resend with their request ids, workers ride it out) and the next
connection goes to the slot's owner. ``ASK`` is never followed: while a slot is being
migrated, commands wait until the move is complete rather than run on the target.

That makes a migration safe for the transitions. A transition touches keys it cannot
name in advance (the jobs it claims), and a script that met a key already moved would
stop half-way, its writes so far kept. But the key every transition declares, the
prefix itself, never exists: on a slot marked MIGRATING the server answers ``ASK`` to
every transition before running it, and the importing node answers ``MOVED`` until the
slot is its own. No transition runs while the namespace is split between two nodes.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.connection import Connection, ConnectionPool, SSLConnection
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    TryAgainError,
)
from redis.retry import Retry

from pipeline.url_parts import MultiHostUrl

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


class SlotMovedError(redis.ConnectionError):
    """The node does not serve the namespace's slot now (it moved, is being migrated,
    or the cluster is down for it): the command did not run; send it again, it goes to
    the slot's owner."""


def namespace_slot(namespace: str) -> int:
    """The hash slot every key of ``namespace`` is in (its keys are ``{ns}:...``)."""
    return int(key_slot(("{" + namespace + "}:").encode()))


@dataclass(frozen=True)
class ClusterUrl:
    """``redis+cluster://[user:pass@]h1:p1[,h2:p2...][/0]``: seed nodes of one cluster."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> ClusterUrl:
        u = MultiHostUrl.split(url)
        if u.path.strip("/") not in ("", "0"):
            raise ValueError("a cluster has database 0 only")
        if not u.hosts:
            raise ValueError("needs host:port[,host:port...]")
        return cls(
            seeds=u.host_ports("node"),
            username=u.username,
            password=u.password,
            tls=u.scheme == "rediss+cluster",
        )

    def client(self, namespace: str, **options: Any) -> redis.Redis:
        """A client for the master that owns ``namespace``'s slot, wherever it moves."""
        options.pop("db", None)
        # What redis.Redis() gives its connections when not told otherwise (from_pool
        # does not): a moved slot is then followed within the same call.
        options.setdefault("retry", Retry(ExponentialWithJitterBackoff(base=0.01, cap=1), 10))
        tls = self.tls or bool(options.pop("ssl", False))
        ssl_options = {k: options.pop(k) for k in list(options) if k.startswith("ssl_")}
        if self.username is not None:
            options.setdefault("username", self.username)
        if self.password is not None:
            options.setdefault("password", self.password)
        owner = SlotOwner(
            self.seeds, namespace_slot(namespace), namespace, options, tls, ssl_options
        )
        pool = SlotPool(
            owner,
            connection_class=SlotSSLConnection if tls else SlotConnection,
            **options,
            **ssl_options,
        )
        return redis.Redis.from_pool(pool)


class SlotOwner:
    """Where one slot is served: cached, learnt again from the cluster after a move."""

    def __init__(
        self,
        seeds: tuple[tuple[str, int], ...],
        slot: int,
        namespace: str,
        options: dict[str, Any],
        tls: bool,
        ssl_options: dict[str, Any],
    ) -> None:
        self.seeds = seeds
        self.slot = slot
        self.namespace = namespace
        # Asking the cluster uses the client's credentials, timeouts and TLS settings,
        # and no retries: the next node is the retry (a dead seed costs one refusal).
        keep = ("username", "password", "socket_timeout", "socket_connect_timeout")
        self._ask: dict[str, Any] = {k: options[k] for k in keep if k in options}
        self._ask.setdefault("socket_timeout", 5)
        self._ask.setdefault("socket_connect_timeout", 5)
        self._ask["retry"] = Retry(NoBackoff(), 0)
        if tls:
            self._ask.update(ssl=True, **ssl_options)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._address: tuple[str, int] | None = None
        self._last: tuple[str, int] | None = None  # the owner before the last move
        self.moves = 0  # bumped on every move seen: pooled connections re-resolve

    def _guard(self) -> threading.Lock:
        if self._pid != os.getpid():  # forked: a thread of the parent may have held it
            self._lock, self._pid = threading.Lock(), os.getpid()
        return self._lock

    def address(self) -> tuple[str, int]:
        with self._guard():
            if self._address is not None:
                return self._address
            last = self._last
        # Asked outside the lock: a node that hangs must not hold up every thread (the
        # lease keeper among them) for its timeout.
        found = self._find(last)
        with self._guard():
            if self._address is None:
                self._address = found
            return self._address

    def moved(self, to: tuple[str, int] | None, *, was: tuple[str, int] | None = None) -> None:
        """The slot is elsewhere: at ``to`` (a MOVED named it) or unknown (None). With
        ``was`` (the address that failed), an answer another thread learnt since is
        kept."""
        with self._guard():
            if was is not None and self._address not in (None, was):
                return
            if self._address is not None:
                self._last = self._address
            self._address = to
            self.moves += 1

    def _find(self, last: tuple[str, int] | None) -> tuple[str, int]:
        """The slot's master, from the first node that answers ``CLUSTER SLOTS``: the
        last known owner first (it knows best after a failover it took part in), then
        the seeds."""
        errors = []
        nodes = [last] if last is not None else []
        nodes += [s for s in self.seeds if s != last]
        for host, port in nodes:
            try:
                node = redis.Redis(host=host, port=port, **self._ask)
                try:
                    ranges: Any = node.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
                finally:
                    node.close()
            except redis.RedisError as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            for first, last_slot, master, *_ in ranges:
                if int(first) <= self.slot <= int(last_slot):
                    where = master[0].decode() if isinstance(master[0], bytes) else master[0]
                    return (where or host, int(master[1]))
            errors.append(f"{host}:{port}: no master serves slot {self.slot}")
        raise SlotMovedError(
            f"no cluster node says where namespace {self.namespace!r} (slot {self.slot}) "
            f"is served: {'; '.join(errors)}"
        )


class _SlotRouted:
    """Connects to the slot's owner; turns a redirection into ``SlotMovedError``."""

    owner: SlotOwner
    moves: int
    host: str
    port: int

    def __init__(self, *, owner: SlotOwner, **kwargs: Any) -> None:
        self.owner = owner
        self.moves = owner.moves
        super().__init__(**kwargs)

    def _connect(self) -> Any:
        self.moves = self.owner.moves
        self.host, self.port = self.owner.address()
        try:
            return super()._connect()  # type: ignore[misc]
        except OSError:
            # The master may have died and a replica taken its slots over: ask the
            # cluster again on the next attempt rather than dial the dead node for ever.
            self.owner.moved(None, was=(self.host, self.port))
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.ResponseError as exc:
            here = (self.host, self.port)
            if isinstance(exc, MovedError):
                self.owner.moved((exc.host, exc.port) if exc.host else None, was=here)
                why = f"moved to {exc.host}:{exc.port}"
            elif isinstance(exc, AskError | TryAgainError):
                why = "is being migrated"  # ASK is not followed: wait for the move's end
            elif isinstance(exc, ClusterDownError | ReadOnlyError) or str(exc).startswith(
                "UNBLOCKED"
            ):
                # The cluster lost the slot's master, or this node was demoted (a
                # failover answers blocked clients UNBLOCKED): ask the cluster again.
                self.owner.moved(None, was=here)
                why = f"is not served here ({exc})"
            else:
                raise
            self.disconnect()  # type: ignore[attr-defined]
            raise SlotMovedError(
                f"namespace {self.owner.namespace!r} (slot {self.owner.slot}) {why}"
            ) from exc


class SlotConnection(_SlotRouted, Connection):
    pass


class SlotSSLConnection(_SlotRouted, SSLConnection):
    pass


class SlotPool(ConnectionPool):
    """A pool whose connections all go to one slot's owner; a connection made before
    the slot last moved is reconnected before it is handed out."""

    def __init__(self, owner: SlotOwner, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.owner = owner
        self.connection_kwargs["owner"] = owner

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        conn: Any = super().get_connection(*args, **kwargs)
        if conn.moves != self.owner.moves:
            try:
                conn.disconnect()
                conn.connect()
            except BaseException:
                self.release(conn)
                raise
        return conn
