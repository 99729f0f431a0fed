"""A DAG's progress from its hash's counters, computed the same way for every reader
(``Client.dag``, the dashboard): a finished job counts 100, a running one its own percent
(``pct_sum`` holds the running jobs' percents, kept by the transitions)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _num(value: Any) -> float:
    if isinstance(value, bytes):
        value = value.decode()
    return float(value or 0)


@dataclass(frozen=True)
class DagRollup:
    total: int
    open: int
    dead: int
    upstream: int
    cancelled: int
    pct_sum: float

    @classmethod
    def from_hash(cls, fields: Mapping[str, Any]) -> DagRollup:
        """From the DAG hash's fields (str or bytes values, absent ones 0)."""
        counts = {k: int(_num(fields.get(k))) for k in ("total", "open", "dead", "upstream")}
        return cls(
            **counts,
            cancelled=int(_num(fields.get("cancelled"))),
            pct_sum=_num(fields.get("pct_sum")),
        )

    @property
    def completed(self) -> int:
        return self.total - self.open - self.dead - self.upstream - self.cancelled

    @property
    def percent(self) -> float:
        return round((self.completed * 100 + self.pct_sum) / (self.total or 1), 2)
