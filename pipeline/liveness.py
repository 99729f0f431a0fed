"""Who is alive and which leases have lapsed, judged by Redis' clock.

Heartbeat expiries and lease deadlines are written by the Lua transitions with the
server's ``TIME``; comparing them with this machine's clock would call a worker dead (or a
lapsed lease live) whenever the two clocks disagree. Every comparison here reads ``TIME``.

A job whose worker died stays ``active`` until a live worker reclaims its lapsed lease;
with no worker at all nobody does, so ``mediapipe status`` says so instead of showing the
job as running with stale progress.
"""

from __future__ import annotations

from typing import Any

import redis

from pipeline.clock import redis_now_ms
from pipeline.keys import Keys
from pipeline.replies import as_str, as_str_dict

__all__ = ["lapsed_in_queue", "lapsed_jobs", "live_workers", "redis_now_ms"]


def live_workers(r: redis.Redis, keys: Keys, now_ms: int | None = None) -> list[dict[str, str]]:
    """Worker nodes whose heartbeat has not expired."""
    now = redis_now_ms(r) if now_ms is None else now_ms
    out = []
    for wid in r.zrangebyscore(keys.workers, f"({now}", "+inf"):
        h = as_str_dict(r.hgetall(keys.worker(as_str(wid))))
        if h:
            out.append({"id": as_str(wid), **h})
    return out


def lapsed_jobs(
    r: redis.Redis, keys: Keys, jobs: dict[str, dict[str, Any]], now_ms: int | None = None
) -> dict[str, int]:
    """Active jobs (by name) whose lease has lapsed: {name: ms since it lapsed}."""
    now = redis_now_ms(r) if now_ms is None else now_ms
    out: dict[str, int] = {}
    for name, job in jobs.items():
        if job.get("state") != "active" or not job.get("queue"):
            continue
        deadline = r.zscore(keys.active(job["queue"]), job["id"])
        if deadline is not None and deadline < now:
            out[name] = now - int(deadline)
    return out


def lapsed_in_queue(r: redis.Redis, keys: Keys, queue: str, now_ms: int) -> tuple[int, int]:
    """(active jobs of the queue whose lease has lapsed, ms since the oldest lapsed)."""
    key = keys.active(queue)
    count = int(r.zcount(key, "-inf", f"({now_ms}"))
    if not count:
        return 0, 0
    oldest = r.zrange(key, 0, 0, withscores=True)
    return count, now_ms - int(oldest[0][1]) if oldest else 0


def ago(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
