"""How long finished work stays in Redis. On by default: every worker node applies it on
a timer (``mediapipe prune`` does the same on demand), so a fleet's keys and memory
return to a baseline once its DAGs finish.

Each ``prune`` call deletes at most ``budget`` jobs (about five keys each), so no call
holds Redis for more than a few milliseconds; a fleet-wide gap between working calls
keeps many nodes pruning at once from taking turns on Redis back to back.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

HOUR = 3600.0
DAY = 24 * HOUR

_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": HOUR, "d": DAY}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``24h`` or ``14d``."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 24h, 14d)")
    return float(m.group(1)) * _UNITS[m.group(2) or ""]


@dataclass(frozen=True)
class Retention:
    completed_count: int = 10_000  # completed DAGs kept
    completed_age: float = DAY  # seconds after finishing
    failed_count: int = 50_000  # failed and cancelled DAGs kept
    failed_age: float = 14 * DAY
    dead_count: int = 10_000  # dead-letter entries kept (the jobs stay with their DAG)
    dead_age: float = 14 * DAY
    idempotency_age: float = DAY  # a finished DAG's idempotency key lives this long
    events_age: float = 7 * DAY  # fleet event stream entries ({ns}:events)
    building_age: float = 3600.0  # a DAG still building this long was abandoned by its submit
    budget: int = 200  # jobs deleted per call (~2-4 ms of Redis time), so none blocks long
    interval: float = 30.0  # seconds between a worker node's passes

    def script_args(self) -> list[int]:
        return [
            self.completed_count,
            int(self.completed_age * 1000),
            self.failed_count,
            int(self.failed_age * 1000),
            self.budget,
            self.dead_count,
            int(self.dead_age * 1000),
            int(self.idempotency_age * 1000),
            int(self.events_age * 1000),
            int(self.building_age * 1000),
        ]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Retention | None:
        """Settings from ``MEDIAPIPE_RETENTION_<FIELD>`` (durations as 90s, 24h, 14d);
        None when ``MEDIAPIPE_RETENTION=off``."""
        env = os.environ if env is None else env
        if env.get("MEDIAPIPE_RETENTION", "").strip().lower() in ("off", "0", "false", "no"):
            return None
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = "MEDIAPIPE_RETENTION_" + f.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[f.name] = int(raw) if f.type == "int" else parse_duration(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r}: not a valid value") from None
        return cls(**values)


@dataclass
class Pruned:
    """What retention deleted: DAGs (with their jobs), dead-letter entries trimmed from
    the queue, fleet events trimmed; ``more`` when the budget ran out with work left and
    ``retry_in`` is how long to wait before the next step (seconds)."""

    dags: int = 0
    jobs: int = 0
    dead: int = 0
    events: int = 0
    steps: int = 0
    more: bool = False
    retry_in: float = 0.0

    def add(self, other: Pruned) -> None:
        self.dags += other.dags
        self.jobs += other.jobs
        self.dead += other.dead
        self.events += other.events
        self.steps += other.steps
        self.more, self.retry_in = other.more, other.retry_in

    def __str__(self) -> str:
        return (
            f"pruned {self.dags} DAGs ({self.jobs} jobs), {self.dead} dead-letter entries, "
            f"{self.events} events"
        )


def prune_step(run: Any, retention: Retention) -> Pruned:
    """One bounded ``prune`` call; ``run`` is a transition runner (``Client._run``)."""
    dags, jobs, dead, events, more, retry_ms = run("prune", *retention.script_args())
    return Pruned(
        int(dags), int(jobs), int(dead), int(events), 1, bool(int(more)), int(retry_ms) / 1000
    )


def prune(run: Any, retention: Retention, *, max_steps: int | None = None) -> Pruned:
    """Steps until nothing more is due (or ``max_steps``), waiting between them as the
    script asks."""
    total = Pruned()
    while max_steps is None or total.steps < max_steps:
        total.add(prune_step(run, retention))
        if not total.more:
            break
        if max_steps is None or total.steps < max_steps:
            time.sleep(total.retry_in)
    return total
