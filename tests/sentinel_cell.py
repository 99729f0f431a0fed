"""A Sentinel cell on 127.0.0.1 for tests and the failover soak: one master, two
replicas and three sentinels, real valkey-server processes (the binary the embedded mode
uses)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from pipeline.server import server_binary

MASTER = "mymaster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cell:
    """One master, two replicas, three sentinels on 127.0.0.1."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports = [free_port() for _ in range(3)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        for i, port in enumerate(self.ports):
            args = ["--port", str(port), "--save", "", "--appendonly", "no"]
            if i:
                args += ["--replicaof", "127.0.0.1", str(self.ports[0])]
            self.procs.append(self._server(f"node{i}", args))
        for i, port in enumerate(self.sentinel_ports):
            conf = tmp / f"sentinel{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.ports[0]} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 4000\n"
                f"sentinel parallel-syncs {MASTER} 2\n"
            )
            self.procs.append(self._server(f"sentinel{i}", [str(conf), "--sentinel"]))
        self.url = (
            "redis+sentinel://"
            + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
            + f"/{MASTER}"
        )

    def _server(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        folder = self.tmp / name
        folder.mkdir(exist_ok=True)
        log = open(folder / "log", "ab")  # noqa: SIM115
        return subprocess.Popen(
            [server_binary(), *args], cwd=folder, stdout=log, stderr=subprocess.STDOUT
        )

    def ready(self) -> bool:
        try:
            master = redis.Redis(port=self.master(), socket_timeout=1)
            info: Any = master.info("replication")
            states = [info.get(f"slave{i}", {}).get("state") for i in range(2)]
            if states != ["online", "online"]:  # connected, and done with the first sync
                return False
            for p in self.sentinel_ports:
                s = redis.Redis(port=p)
                replicas: Any = s.sentinel_slaves(MASTER)
                others: Any = s.sentinel_sentinels(MASTER)
                if len(replicas) != 2 or len(others) != 2:
                    return False
        except (redis.RedisError, RuntimeError):
            return False
        return True

    def master(self) -> int:
        """The port of the master the sentinels name now."""
        for p in self.sentinel_ports:
            try:
                addr: Any = redis.Redis(port=p, socket_timeout=1).sentinel_get_master_addr_by_name(
                    MASTER
                )
            except redis.RedisError:
                continue
            if isinstance(addr, tuple | list):
                return int(addr[1])
        raise RuntimeError("no sentinel answers")

    def kill_master(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGKILL the master, wait until the sentinels promote a replica and restart the
        killed node as a replica of it. Returns (new master port, seconds to promotion)."""
        old = self.master()
        i = self.ports.index(old)
        self.procs[i].kill()
        self.procs[i].wait(10)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                new = self.master()
            except RuntimeError:
                new = old
            if new != old:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("no failover")
        took = time.monotonic() - t0
        args = ["--port", str(old), "--save", "", "--appendonly", "no"]
        self.procs[i] = self._server(f"node{i}", [*args, "--replicaof", "127.0.0.1", str(new)])
        return new, took

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
