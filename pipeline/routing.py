"""Which queues live workers serve, so jobs go where they can run.

A job that needs capabilities waits in ``queue@tag+tag`` (``routed_queue``; this module
alone builds and reads that grammar). A
job that only *prefers* them (a GPU path with a CPU fallback) goes there when a live
worker serves that queue, otherwise to the plain queue; and if the preferred workers all
disappear later, ``reroute_orphans`` moves its waiting jobs to their fallback, so no job
waits forever for a GPU that is not there.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from pipeline.clock import redis_now_ms
from pipeline.keys import Keys
from pipeline.replies import as_str

ROUTE, TAG = "@", "+"  # default@nvdec+nvenc: the queue, then the tags its workers hold


def routed_queue(queue: str, tags: Iterable[str]) -> str:
    """The queue a job really waits in: jobs that need capabilities (``gpu``, ``nvenc``) wait
    in ``queue@tag1+tag2``, which only workers holding every one of those tags listen to."""
    t = sorted(set(tags))
    return f"{queue}{ROUTE}{TAG.join(t)}" if t else queue


def route_of(queue: str) -> tuple[str, frozenset[str]]:
    """``default@nvdec+nvenc`` -> ("default", {"nvdec", "nvenc"}); a plain queue has no tags."""
    base, _, tags = queue.partition(ROUTE)
    return base, frozenset(t for t in tags.split(TAG) if t)


def is_routed(queue: str) -> bool:
    """Whether jobs wait in ``queue`` for workers with capabilities."""
    return ROUTE in queue


def live_queues(client: redis.Redis, keys: Keys) -> set[str]:
    now_ms = redis_now_ms(client)
    served: set[str] = set()
    for wid in client.zrangebyscore(keys.workers, f"({now_ms}", "+inf"):
        queues = client.hget(keys.worker(as_str(wid)), "queues")
        if queues:
            served.update(q for q in as_str(queues).split(",") if q)
    return served


def orphan_queues(client: redis.Redis, keys: Keys) -> dict[str, int]:
    """Queues with waiting jobs that no live worker serves: {queue: waiting}."""
    served = live_queues(client, keys)
    gaps: dict[str, int] = {}
    for raw in client.smembers(keys.queues):
        q = as_str(raw)
        if q not in served:
            waiting = int(client.zcard(keys.wait(q)))
            if waiting:
                gaps[q] = waiting
    return gaps
