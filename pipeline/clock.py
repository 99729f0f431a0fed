"""Redis' clock. Leases, heartbeats and due times are stamped by the scripts with Redis'
TIME, so whoever compares against them must read the same clock: a box whose own clock
is a minute off would otherwise see live workers as gone, or dead ones as alive."""

from __future__ import annotations

from typing import Any


def redis_now_ms(client: Any) -> int:
    sec, usec = client.time()
    return int(sec) * 1000 + int(usec) // 1000
