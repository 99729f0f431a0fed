"""What a worker says of itself in each heartbeat, written by worker nodes and batch lanes
and read by ``status`` and the dashboard: one model, so a field added on one side is
known to the other.

Redis keeps it as a flat hash of strings (``worker_heartbeat.lua`` adds ``last_seen``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _int(v: Any) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return 0


def _names(v: Any) -> tuple[str, ...]:
    return tuple(t for t in str(v or "").split(",") if t)


@dataclass(frozen=True)
class WorkerBeat:
    capacity: int
    in_use: int
    jobs_done: int
    queues: tuple[str, ...]
    tags: tuple[str, ...] = ()
    jobs_failed: int = 0
    state: str = "running"  # running | stopping
    lane: str = ""  # "batch:<stage>" for a batch lane, "" for a worker node
    gpus: str = ""
    capacity_reason: str = ""  # why the adaptive pool is at its capacity
    cpu_percent: str = ""  # the last psutil reading, "" before the first
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    # Read back only: the worker's id and when Redis last heard from it (server ms).
    id: str = ""
    last_seen_ms: int = 0

    def fields(self) -> dict[str, str | int]:
        """The hash a heartbeat writes."""
        return {
            "host": self.host,
            "pid": self.pid,
            "tags": ",".join(self.tags),
            "queues": ",".join(self.queues),
            "capacity": self.capacity,
            "in_use": self.in_use,
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "state": self.state,
            "lane": self.lane,
            "gpus": self.gpus,
            "capacity_reason": self.capacity_reason,
            "cpu_percent": self.cpu_percent,
        }

    @classmethod
    def read(cls, worker_id: str, h: Mapping[str, str]) -> WorkerBeat:
        """A worker's hash as Redis holds it (missing or malformed fields read as empty)."""
        return cls(
            id=worker_id,
            host=h.get("host", ""),
            pid=_int(h.get("pid")),
            tags=_names(h.get("tags")),
            queues=_names(h.get("queues")),
            capacity=_int(h.get("capacity")),
            in_use=_int(h.get("in_use")),
            jobs_done=_int(h.get("jobs_done")),
            jobs_failed=_int(h.get("jobs_failed")),
            state=h.get("state", ""),
            lane=h.get("lane", ""),
            gpus=h.get("gpus", ""),
            capacity_reason=h.get("capacity_reason", ""),
            cpu_percent=h.get("cpu_percent", ""),
            last_seen_ms=_int(h.get("last_seen")),
        )

    @property
    def load(self) -> float:
        return round(self.in_use / self.capacity, 2) if self.capacity else 0.0
