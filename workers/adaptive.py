"""Adaptive concurrency: the worker's capacity (in slots) follows the machine's load.

AIMD with hysteresis, the way TCP finds a link's capacity: grow by one slot when there is
backlog and idle CPU for a few readings in a row, halve at once under memory pressure or
overload, then hold still for a cool-down so one noisy reading does not make it oscillate.
The readings come from a ``LoadSource``; tests inject one, the worker uses psutil.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import psutil


@dataclass(frozen=True)
class LoadReading:
    cpu_percent: float  # whole machine, 0-100
    load_per_cpu: float  # 1-minute load average / cores
    mem_available_fraction: float  # 0-1
    children_rss: int  # bytes used by this worker's pool


class LoadSource(Protocol):
    def read(self) -> LoadReading: ...


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity mask (``taskset``, a container's
    cpuset), not the machine's count, so a worker pinned to one core runs one job."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _allowed_cpus() -> list[int] | None:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


class PsutilLoad:
    """The real readings. ``children_of`` gives the pids whose RSS counts as ours."""

    def __init__(self, children_of: Callable[[], list[int]] | None = None) -> None:
        self.children_of = children_of or (lambda: [])
        allowed = _allowed_cpus()
        # Busy cores outside the affinity mask are not ours to fill: CPU is read over
        # the cores this worker may use.
        self.cpus = (
            allowed if allowed is not None and len(allowed) < (os.cpu_count() or 1) else None
        )
        psutil.cpu_percent(None, percpu=self.cpus is not None)  # starts the interval

    def _cpu_percent(self) -> float:
        if self.cpus is None:
            return float(psutil.cpu_percent(None))
        per = psutil.cpu_percent(None, percpu=True)
        mine = [per[i] for i in self.cpus if i < len(per)]
        return sum(mine) / len(mine) if mine else 0.0

    def read(self) -> LoadReading:
        rss = 0
        for pid in self.children_of():
            try:
                proc = psutil.Process(pid)
                rss += proc.memory_info().rss
                for sub in proc.children(recursive=True):  # ffmpeg counts too
                    rss += sub.memory_info().rss
            except psutil.Error:
                continue
        vm = psutil.virtual_memory()
        return LoadReading(
            cpu_percent=self._cpu_percent(),
            # The load average counts the whole machine's runnable tasks: per machine core.
            load_per_cpu=os.getloadavg()[0] / (os.cpu_count() or 1),
            mem_available_fraction=vm.available / vm.total,
            children_rss=rss,
        )


@dataclass
class Limits:
    min: int = 1
    max: int = field(default_factory=usable_cores)
    low_memory: float = 0.10  # available fraction below which we shrink
    rss_limit: int | None = None  # bytes the pool may use; None: no limit
    overload: float = 1.5  # load per core above which we shrink
    idle_cpu: float = 75.0  # CPU % below which growing is allowed
    grow_after: int = 2  # consecutive favourable readings before growing
    cooldown: float = 10.0  # seconds without growing after a shrink


class AdaptiveConcurrency:
    def __init__(
        self,
        source: LoadSource,
        limits: Limits,
        initial: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.limits = limits
        self.capacity = max(limits.min, min(limits.max, initial or limits.max))
        self.reason = "initial"
        self.last_reading: LoadReading | None = None
        self._favourable = 0
        self._last_shrink = -math.inf
        self._clock = clock

    def tick(self, *, backlog: bool) -> tuple[int, str] | None:
        """Take a reading and adjust; returns (new capacity, reason) when it changed."""
        r = self.source.read()
        self.last_reading = r
        lim = self.limits
        old = self.capacity
        reason = ""
        if r.mem_available_fraction < lim.low_memory:
            reason = f"memory pressure: {r.mem_available_fraction:.0%} available"
        elif lim.rss_limit is not None and r.children_rss > lim.rss_limit:
            reason = f"pool RSS {r.children_rss >> 20} MiB over {lim.rss_limit >> 20} MiB"
        elif r.load_per_cpu > lim.overload:
            reason = f"overload: load {r.load_per_cpu:.2f} per core"
        if reason:
            self._favourable = 0
            self._last_shrink = self._clock()
            self.capacity = max(lim.min, old // 2)
        elif backlog and r.cpu_percent < lim.idle_cpu and old < lim.max:
            self._favourable += 1
            if (
                self._favourable >= lim.grow_after
                and self._clock() - self._last_shrink >= lim.cooldown
            ):
                self._favourable = 0
                self.capacity = old + 1
                reason = f"backlog and idle CPU ({r.cpu_percent:.0f}%)"
        else:
            self._favourable = 0
        if self.capacity != old:
            self.reason = reason
            return self.capacity, reason
        return None
