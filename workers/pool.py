"""The pool of child processes that run stage functions.

Children start with the ``forkserver`` method by default: a clean single-threaded server
process forks each child, so no lock held by a parent thread (the lease keeper, libvips'
or ffmpeg's threads) is inherited in a locked state, and each child starts fast. A child
that dies (segfault, ``os._exit``, OOM kill) is replaced; the pool never shrinks by
accident.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from pipeline.jobs import ClaimedJob
from pipeline.logsetup import LogSettings
from workers import wire
from workers.child import child_main
from workers.proctree import kill_tree


def remove_temp(path: str) -> None:
    # stages.output names and removes temporary outputs; imported here, not at module
    # level, so a pool that runs no media stages does not load them.
    from stages.output import remove

    remove(path)


@dataclass
class Child:
    process: Any  # multiprocessing.Process of the chosen context
    conn: Connection
    job: ClaimedJob | None = None
    cost: int = 0
    started: float = 0.0
    deadline: float = 0.0
    ready: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    @property
    def busy(self) -> bool:
        return self.job is not None


class Pool:
    def __init__(
        self, size: int, *, start_method: str = "forkserver", preload: tuple[str, ...] = ()
    ) -> None:
        self.ctx: Any = mp.get_context(start_method)
        if start_method == "forkserver":
            self.ctx.set_forkserver_preload(["pipeline.context", "workers.child", *preload])
        self.preload = list(preload)
        # A forkserver child starts without the parent's logging set-up: given the
        # parent's levels and format, it logs to stderr as the parent does (libvips'
        # warnings from a render reach `submit --debug`, as JSON under --log-format json).
        self.log_settings = LogSettings.current()
        self.children: list[Child] = []
        self.resize(size)

    def _spawn(self) -> Child:
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=child_main,
            args=(child_conn, self.preload, self.log_settings),
            daemon=True,
            name="mediapipe-child",
        )
        proc.start()
        child_conn.close()
        return Child(proc, parent_conn)

    def resize(self, size: int) -> None:
        """Grow to ``size`` children; shrink only by retiring idle ones."""
        while len(self.children) < size:
            self.children.append(self._spawn())
        for c in [c for c in self.children if not c.busy][: max(0, len(self.children) - size)]:
            self.retire(c)

    def idle(self) -> Child | None:
        for c in self.children:
            if not c.busy and c.process.is_alive():
                return c
        return None

    def start(self, child: Child, ref: str, job: ClaimedJob, cost: int, now: float) -> None:
        child.job, child.cost, child.started = job, cost, now
        child.extra["temps"] = []  # temporary outputs the job announced (see note_temp)
        child.deadline = now + job.timeout if job.timeout > 0 else float("inf")
        child.conn.send((ref, job))

    @staticmethod
    def note_temp(child: Child, path: str) -> None:
        """The child's job is about to create a temporary output at ``path``."""
        child.extra.setdefault("temps", []).append(path)

    def _sweep(self, child: Child) -> None:
        """After a kill: remove the temporary outputs the child's job had started, including
        those announced in messages nobody read yet (a killed job cannot rename or remove
        them, and no later attempt may come: its DAG was cancelled)."""
        temps = child.extra.pop("temps", [])
        with contextlib.suppress(EOFError, OSError, ValueError):
            while child.conn.poll():
                msg = wire.recv(child.conn)
                if msg[0] == "temp" and len(msg) == 3 and isinstance(msg[2], str):
                    temps.append(msg[2])
        for path in temps:
            remove_temp(path)

    def replace(self, child: Child) -> Child:
        """Kill a child with everything it started and put a fresh one in its place."""
        kill_tree(child.pid)
        child.process.join(1)
        self._sweep(child)
        child.conn.close()
        fresh = self._spawn()
        self.children[self.children.index(child)] = fresh
        return fresh

    def retire(self, child: Child) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            child.conn.send(None)
        child.process.join(2)
        if child.process.is_alive():
            kill_tree(child.pid)
        child.conn.close()
        self.children.remove(child)

    def close(self) -> None:
        for c in list(self.children):
            if c.busy:
                kill_tree(c.pid)
                self._sweep(c)
                c.conn.close()
                self.children.remove(c)
            else:
                self.retire(c)

    def pids(self) -> list[int]:
        return [c.pid for c in self.children if c.process.pid is not None]
