"""Redis' clock. Leases, heartbeats and due times are stamped by the scripts with Redis'
TIME, so whoever compares against them must read the same clock: a box whose own clock
is a minute off would otherwise see live workers as gone, or dead ones as alive. Schedules
stamp their creation and read "now" from it too, so every node agrees when a tick is due."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def redis_now_ms(client: Any) -> int:
    """Redis' ``TIME`` in whole milliseconds since the epoch."""
    sec, usec = client.time()
    return int(sec) * 1000 + int(usec) // 1000


def redis_clock(client: Any) -> Callable[[], float]:
    """A clock (epoch seconds, like ``time.time``) that reads Redis' ``TIME``."""

    def now() -> float:
        sec, usec = client.time()
        return int(sec) + int(usec) / 1_000_000

    return now
