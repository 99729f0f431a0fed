"""Server-sent events for the dashboard: the page redraws when something happens instead
of polling each second.

The fleet stream (``{ns}:events``) gets an entry when a DAG is submitted or ends, a job
dies or stalls, a queue is paused or resumed, a breaker moves, a schedule fires. The
stream below follows it with a blocking ``XREAD`` and sends a ``change`` event (with the
event types) as each arrives. Progress, job starts and heartbeats are not on the fleet
stream, so a ``tick`` follows every ``ACTIVE_TICK`` seconds while any job is running, and
every ``IDLE_TICK`` seconds otherwise. A stream ends after ``MAX_SECONDS`` (the page
reconnects), so no request thread is held for ever.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import redis

from pipeline.keys import Keys
from pipeline.replies import as_str, as_str_dict

ACTIVE_TICK = 1.0
IDLE_TICK = 5.0
MAX_SECONDS = 55.0
BLOCK_MS = 1000  # well under the dashboard's 5 s socket timeout


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def follow(
    r: redis.Redis,
    keys: Keys,
    *,
    max_seconds: float = MAX_SECONDS,
    active_tick: float = ACTIVE_TICK,
    idle_tick: float = IDLE_TICK,
) -> Iterator[str]:
    """The text of an event stream; ends after ``max_seconds`` or when Redis fails."""
    try:
        newest: Any = r.xrevrange(keys.events, count=1)
        last = as_str(newest[0][0]) if newest else "0-0"
        yield sse("hello", {"after": last})
        deadline = time.monotonic() + max_seconds
        ticked = time.monotonic()
        while time.monotonic() < deadline:
            reply: Any = r.xread({keys.events: last}, count=100, block=BLOCK_MS)
            now = time.monotonic()
            if reply:
                entries = reply[0][1]
                last = as_str(entries[-1][0])
                kinds = sorted({as_str_dict(f).get("ev", "") for _, f in entries})
                yield sse("change", {"events": kinds, "last": last})
                ticked = now
                continue
            every = active_tick if _running(r, keys) else idle_tick
            if now - ticked >= every:
                yield sse("tick", {})
                ticked = now
    except redis.RedisError as exc:
        yield sse("bye", {"error": type(exc).__name__})


def _running(r: redis.Redis, keys: Keys) -> bool:
    queues = [as_str(q) for q in r.smembers(keys.queues)]
    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.zcard(keys.active(q))
    return any(int(n) for n in pipe.execute())
