"""How long finished DAGs stay in Redis. On by default, so a fleet's memory stays bounded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Retention:
    completed_count: int = 10_000  # DAGs
    completed_age: float = 24 * 3600.0  # seconds
    failed_count: int = 50_000
    failed_age: float = 14 * 24 * 3600.0
    budget: int = 1_000  # jobs deleted per script call, so Redis never blocks long

    def script_args(self) -> list[int]:
        return [
            self.completed_count,
            int(self.completed_age * 1000),
            self.failed_count,
            int(self.failed_age * 1000),
            self.budget,
        ]
