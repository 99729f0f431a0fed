"""A Valkey Cluster on 127.0.0.1 for tests and benchmarks: three masters (each with
``replicas`` replicas), real valkey-server processes (the binary the embedded mode
uses), the slots split in three equal ranges, assembled with CLUSTER MEET/ADDSLOTSRANGE
as ``valkey-cli --cluster create`` does."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from pipeline.cluster import namespace_slot
from pipeline.server import server_binary

SLOTS = 16384


def _port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = random.randint(20000, 55535)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port


class ClusterCell:
    def __init__(self, tmp: Path, *, masters: int = 3, replicas: int = 0) -> None:
        self.tmp = tmp
        self.masters = masters
        n = masters * (1 + replicas)
        self.ports = [_port() for _ in range(n)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        try:
            self._assemble(masters)
        except BaseException:
            self.stop()  # no server outlives a cell that failed to form
            raise

    def _assemble(self, masters: int) -> None:
        for port in self.ports:
            self.start(port)
        self._wait(lambda: all(self._answers(p) for p in self.ports), 20, "nodes to start")
        first = self.node(self.ports[0])
        for port in self.ports[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        per = SLOTS // masters
        for i in range(masters):
            last = SLOTS - 1 if i == masters - 1 else (i + 1) * per - 1
            self.node(self.ports[i]).execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
        self._wait(self._all_known, 20, "nodes to meet")
        for j, port in enumerate(self.ports[masters:]):
            master = self.ports[j % masters]
            # until the handshake has given the master its real id on this node
            self._wait(
                lambda p=port, m=master: self.node(p).execute_command(
                    "CLUSTER", "REPLICATE", self.node_id(m)
                ),
                20,
                "a replica to attach",
            )
        self._wait(self.ok, 30, "the cluster to be ok")
        self._wait(self._replicas_synced, 30, "the replicas to sync")
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def start(self, port: int) -> None:
        folder = self.tmp / f"node{port}"
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / "log", "ab")  # noqa: SIM115
        args = [
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--repl-diskless-sync-delay", "0",
            "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
        ]  # fmt: skip
        self.procs[port] = subprocess.Popen(
            [server_binary(), *args], cwd=folder, stdout=log, stderr=subprocess.STDOUT
        )

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5)

    def _answers(self, port: int) -> bool:
        try:
            return bool(self.node(port).ping())
        except redis.RedisError:
            return False

    def _all_known(self) -> bool:
        for p in self.ports:
            info = self.node(p).execute_command("CLUSTER", "INFO")
            if int(_field(info, "cluster_known_nodes")) != len(self.ports):
                return False
        return True

    def ok(self) -> bool:
        try:
            for p in self.ports:
                if p in self.procs and self.procs[p].poll() is None:
                    info = self.node(p).execute_command("CLUSTER", "INFO")
                    if _field(info, "cluster_state") != "ok":
                        return False
            return True
        except redis.RedisError:
            return False

    def _replicas_synced(self) -> bool:
        for p in self.ports[self.masters :]:
            info: Any = self.node(p).info("replication")
            if info.get("master_link_status") != "up":
                return False
        return True

    def node_id(self, port: int) -> str:
        return str(self.node(port).execute_command("CLUSTER", "MYID").decode())

    def owner(self, namespace: str) -> int:
        """The port of the master that serves ``namespace`` now."""
        slot = namespace_slot(namespace)
        for p in self.ports:
            if self.procs[p].poll() is not None:
                continue
            try:
                ranges: Any = self.node(p).execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            for first, last, master, *_ in ranges:
                if first <= slot <= last:
                    return int(master[1])
        raise RuntimeError(f"no node serves slot {slot}")

    def namespaces(self, prefix: str = "t") -> list[str]:
        """One namespace per master: the first names ``<prefix><n>`` in each range."""
        per = SLOTS // self.masters
        found: dict[int, str] = {}
        n = 0
        while len(found) < self.masters:
            name = f"{prefix}{n}"
            found.setdefault(min(namespace_slot(name) // per, self.masters - 1), name)
            n += 1
        return [found[i] for i in range(self.masters)]

    def _wait(self, cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)


def _field(info: bytes | str, name: str) -> str:
    text = info.decode() if isinstance(info, bytes) else info
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


def migrate_slot(
    cell: ClusterCell, slot: int, to: int, *, batch: int = 10, pause: float = 0.0
) -> int:
    """Move ``slot`` to the master on port ``to`` the way ``valkey-cli --cluster reshard``
    does (IMPORTING, MIGRATING, MIGRATE in batches, SETSLOT NODE), ``batch`` keys per
    MIGRATE with ``pause`` seconds between batches, so the slot stays half-moved for a
    while. Returns the number of keys moved."""
    source_port = next(p for p in cell.ports[: cell.masters] if _serves(cell, p, slot))
    source, target = cell.node(source_port), cell.node(to)
    source_id, target_id = cell.node_id(source_port), cell.node_id(to)
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    moved = 0
    while True:
        keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
        if not keys:
            break
        source.execute_command("MIGRATE", "127.0.0.1", to, "", 0, 5000, "KEYS", *keys)
        moved += len(keys)
        time.sleep(pause)
    for p in [
        to,
        source_port,
        *(q for q in cell.ports[: cell.masters] if q not in (to, source_port)),
    ]:
        cell.node(p).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return moved


def _serves(cell: ClusterCell, port: int, slot: int) -> bool:
    ranges: Any = cell.node(port).execute_command("CLUSTER", "SLOTS")
    me = cell.node_id(port)
    for first, last, master, *_ in ranges:
        if first <= slot <= last:
            return bool(master[2].decode() == me)
    return False
