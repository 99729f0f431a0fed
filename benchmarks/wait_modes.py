"""What waiting for a reply costs: PING round trips on one connection, the reply read
blocking (as redis-py and the peers read), by spinning on a non-blocking receive, and by
spinning with a yield between tries (as pipeline/rawlane.py does); microseconds a round
trip and the client's CPU (user + system) a round trip, repetitions interleaved.

    python benchmarks/wait_modes.py [--server BIN] [--n 20000] [--reps 3]

The gap between the blocking and the spinning rows is the CPU's wake-up when the reply
lands (on this project's VM an idle vCPU halts at once: haltpoll.guest_halt_poll_ns=0).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ScratchServer

PING = b"*1\r\n$4\r\nPING\r\n"


def blocking(s: socket.socket, n: int) -> None:
    for _ in range(n):
        s.sendall(PING)
        s.recv(65536)


def spinning(s: socket.socket, n: int) -> None:
    for _ in range(n):
        s.sendall(PING)
        while True:
            try:
                s.recv(65536, socket.MSG_DONTWAIT)
                break
            except BlockingIOError:
                pass


def spinning_yield(s: socket.socket, n: int) -> None:
    give = os.sched_yield
    for _ in range(n):
        s.sendall(PING)
        while True:
            try:
                s.recv(65536, socket.MSG_DONTWAIT)
                break
            except BlockingIOError:
                give()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="/usr/bin/redis-server")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    srv = ScratchServer(a.server)
    port = srv.r.connection_pool.connection_kwargs["port"]
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    modes: list[tuple[str, Callable[[socket.socket, int], None]]] = [
        ("blocking", blocking),
        ("spinning", spinning),
        ("spinning, yield between tries", spinning_yield),
    ]
    try:
        for rep in range(a.reps):
            for name, loop in modes:
                ru, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                loop(s, a.n)
                wall, ru2 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
                cpu = ru2.ru_utime - ru.ru_utime + ru2.ru_stime - ru.ru_stime
                print(
                    f"rep {rep} {name:<30} {wall / a.n * 1e6:6.1f} us a round trip, "
                    f"client CPU {cpu / a.n * 1e6:5.1f} us",
                    flush=True,
                )
    finally:
        s.close()
        srv.stop()


if __name__ == "__main__":
    main()
