"""Whether anything serves a DAG's queues, and if not, why: so ``mediapipe watch`` can say
"no worker is running" instead of sitting at 0% for ever.

A queue is served when a live worker (heartbeat not expired, by Redis' clock) that is not
stopping lists it among the queues it claims from, and the queue is not paused. The
check reads the namespace's queues and the workers' heartbeats first (a few keys); only
when some queue with work in it is not served does it read the DAG's jobs to see whether
any of them waits there.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis

from pipeline.clock import redis_now_ms
from pipeline.keys import Keys
from pipeline.liveness import ago
from pipeline.replies import as_str
from pipeline.routing import route_of

# Job states that need a worker to move on (waiting_children waits for its children).
NEEDS_WORKER = frozenset({"waiting", "delayed", "active"})
# Reasons, as ``Unserved.reason`` and the ``--json`` documents name them.
PAUSED = "paused"
NO_WORKER = "no_worker"
NO_WORKER_FOR_QUEUE = "no_worker_for_queue"
NO_WORKER_WITH_TAGS = "no_worker_with_tags"
WORKERS_STOPPING = "workers_stopping"


@dataclass(frozen=True)
class Unserved:
    queue: str
    reason: str  # one of the constants above
    message: str  # one line, saying what to do
    jobs: int  # the DAG's jobs waiting in the queue (or running there, leases lapsing)


@dataclass(frozen=True)
class _Worker:
    id: str
    queues: frozenset[str]
    tags: frozenset[str]
    stopping: bool


def unserved(r: redis.Redis, keys: Keys, dag_id: str, now_ms: int | None = None) -> list[Unserved]:
    """The queues this DAG has jobs in that nothing serves now, each with why (a queue
    both paused and without a worker comes twice, once for each)."""
    now = redis_now_ms(r) if now_ms is None else now_ms
    workers, last_gone = _workers(r, keys, now)
    served = {q for w in workers if not w.stopping for q in w.queues}
    pipe = r.pipeline(transaction=False)
    queues = sorted(as_str(q) for q in r.smembers(keys.queues))
    for q in queues:
        pipe.hget(keys.meta(q), "paused")
    paused = {q for q, p in zip(queues, pipe.execute(), strict=True) if p == b"1"}
    suspect = {q for q in queues if q in paused or q not in served}
    if not suspect:
        return []
    waiting = _dag_jobs_by_queue(r, keys, dag_id)
    out = []
    for q in sorted(waiting):
        if q in paused:
            why = f"queue {q} is paused: `mediapipe resume {q}` hands its jobs out again"
            out.append(Unserved(q, PAUSED, why, waiting[q]))
        if q not in served:  # resuming it would not be enough: both are said
            out.append(_not_served(q, waiting[q], workers, last_gone, now))
    return out


def _workers(r: redis.Redis, keys: Keys, now: int) -> tuple[list[_Worker], tuple[str, int] | None]:
    """The live workers, and the newest heartbeat that expired (id, ms since) if any: an
    expired entry stays in the registry until the next live heartbeat sweeps it."""
    entries: Any = r.zrange(keys.workers, 0, -1, withscores=True)
    live = [as_str(w) for w, score in entries if score > now]
    expired = [(as_str(w), int(score)) for w, score in entries if score <= now]
    gone = max(expired, key=lambda e: e[1]) if expired else None
    pipe = r.pipeline(transaction=False)
    for wid in live:
        pipe.hmget(keys.worker(wid), "queues", "tags", "state")
    workers = []
    for wid, (qs, tags, state) in zip(live, pipe.execute(), strict=True):
        if qs is None:
            continue  # its hash expired between the two reads
        workers.append(
            _Worker(
                wid,
                frozenset(q for q in as_str(qs).split(",") if q),
                frozenset(t for t in as_str(tags or b"").split(",") if t),
                as_str(state or b"") == "stopping",
            )
        )
    return workers, (gone[0], now - gone[1]) if gone else None


def _dag_jobs_by_queue(r: redis.Redis, keys: Keys, dag_id: str) -> Counter[str]:
    """How many of the DAG's jobs need a worker, by the queue they wait (or run) in."""
    ids = [as_str(i) for i in r.smembers(keys.dag_jobs(dag_id))]
    pipe = r.pipeline(transaction=False)
    for jid in ids:
        pipe.hmget(keys.job(jid), "state", "queue")
    counts: Counter[str] = Counter()
    for state, queue in pipe.execute():
        if state is not None and as_str(state) in NEEDS_WORKER and queue:
            counts[as_str(queue)] += 1
    return counts


def _not_served(
    q: str, jobs: int, workers: list[_Worker], last_gone: tuple[str, int] | None, now: int
) -> Unserved:
    base, tags = route_of(q)
    start = "mediapipe worker" + (f" --queues {base}" if base != "default" else "")
    if tags:
        start += " --tags " + ",".join(sorted(tags))
    if not workers:
        why = "no worker is running"
        if last_gone is not None:
            why += f" (the last heartbeat, from {last_gone[0]}, expired {ago(last_gone[1])})"
        return Unserved(q, NO_WORKER, f"{why}: start one with `{start}`", jobs)
    if any(q in w.queues for w in workers):
        why = f"every worker serving queue {q} is stopping: start one with `{start}`"
        return Unserved(q, WORKERS_STOPPING, why, jobs)
    n = len(workers)
    if tags:
        need = "+".join(sorted(tags))
        why = (
            f"queue {q} needs a worker with tags {need} for queue {base}; none of the {n} "
            f"live worker{'s' if n != 1 else ''} has them: start one with `{start}`"
        )
        return Unserved(q, NO_WORKER_WITH_TAGS, why, jobs)
    others = sorted({x for w in workers for x in w.queues})
    why = (
        f"no live worker takes jobs from queue {q} (the {n} live worker"
        f"{'s' if n != 1 else ''} serve {', '.join(others) or 'no queue'}): "
        f"start one with `{start}`"
    )
    return Unserved(q, NO_WORKER_FOR_QUEUE, why, jobs)
