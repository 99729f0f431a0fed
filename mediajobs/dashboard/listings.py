"""The dashboard's paged lists: DAGs by state with search, jobs by state and queue, and
per-minute throughput and failure counts.

Every read is bounded and none uses SCAN:

- DAGs come from ``pipeline.recent_dags`` (the fleet stream's ``submitted`` events, the
  finished sets, the building set and the running jobs), newest first. A page reads
  ``offset + per_page + 1`` DAGs, pages stop at ``MAX_OFFSET``, and a search looks
  through the newest ``SEARCH_WINDOW`` DAGs (the reply says so).
- Jobs come from the queues' sorted sets (``wait``, ``active``, ``delayed``) and the
  dead-letter set: a page is a ``ZRANGE`` of ``per_page`` members per queue (of
  ``offset + per_page`` when merging queues), then one pipelined read of those jobs.
  Completed jobs are in no set of their own; they are found through their DAG.
- Charts count the members of ``dags:done``, ``dags:failed`` and ``dead`` (scored by
  when they finished or died) per minute with ``ZCOUNT``. Jobs are counted from the
  workers' heartbeats (``jobs_done``, ``jobs_failed``) while the dashboard reads them,
  in ``JobRates``: one pair of counters per minute for the last hour, and each live
  worker's last totals.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from pipeline.keys import Keys
from pipeline.layout import job_fields
from pipeline.recent_dags import DAG_STATES, DagEntry, recent_dags
from pipeline.replies import as_str, as_str_dict

PER_PAGE = 25
MAX_PER_PAGE = 100
MAX_OFFSET = 5000  # the deepest page a list reaches
SEARCH_WINDOW = 2000  # newest DAGs a search looks through
DEAD_FILTER_WINDOW = 1000  # newest dead jobs read when filtering them by queue
JOB_STATES = ("active", "waiting", "delayed", "dead")
CHART_MINUTES = 60


def page_args(page: Any, per_page: Any) -> tuple[int, int]:
    """(offset, per_page) from request values, clamped to what a list may read."""
    try:
        size = min(max(1, int(per_page)), MAX_PER_PAGE)
    except (TypeError, ValueError):
        size = PER_PAGE
    try:
        number = max(1, int(page))
    except (TypeError, ValueError):
        number = 1
    return min((number - 1) * size, MAX_OFFSET), size


def dag_page(
    r: redis.Redis,
    keys: Keys,
    *,
    state: str = "",
    query: str = "",
    page: Any = 1,
    per_page: Any = PER_PAGE,
    now_ms: int,
) -> dict[str, Any]:
    """One page of DAGs, newest first, in ``state`` (all when empty) and matching
    ``query`` (part of the DAG id or its input's name, any case) when given."""
    if state and state not in DAG_STATES:
        raise ValueError(f"unknown DAG state {state!r}: use one of {', '.join(DAG_STATES)}")
    offset, size = page_args(page, per_page)
    states = (state,) if state else ()
    needle = query.strip().casefold()
    if needle:
        listing = recent_dags(r, keys, limit=SEARCH_WINDOW, states=states)
        found = [d for d in listing.dags if _matches(d, needle)]
        searched = len(listing.dags)
    else:
        listing = recent_dags(r, keys, limit=offset + size + 1, states=states)
        found, searched = listing.dags, 0
    rows = found[offset : offset + size]
    pipe = r.pipeline(transaction=False)
    pipe.zcard(keys.dags_done)
    pipe.zcard(keys.dags_failed)
    done, failed = pipe.execute()
    return {
        "dags": [_dag_row(d, now_ms) for d in rows],
        "state": state,
        "query": query,
        "page": offset // size + 1,
        "per_page": size,
        "offset": offset,
        "has_next": len(found) > offset + size and offset + size <= MAX_OFFSET,
        "matches": len(found) if needle else None,
        "searched": searched if needle else None,
        "search_window": SEARCH_WINDOW,
        # False: an unfinished DAG older than the event stream's window may be missing.
        "complete": listing.complete,
        "finished_counts": {"completed": int(done), "failed_or_cancelled": int(failed)},
    }


def _matches(d: DagEntry, needle: str) -> bool:
    texts = (d.id, str(d.meta.get("input") or ""), str(d.meta.get("name") or ""))
    return any(needle in t.casefold() for t in texts)


def _dag_row(d: DagEntry, now_ms: int) -> dict[str, Any]:
    end = d.finished_ms or (now_ms if d.state in ("running", "building") else 0)
    return {
        "id": d.id,
        "state": d.state,
        "input": str(d.meta.get("input") or d.meta.get("name") or ""),
        "preset": str(d.meta.get("preset") or ""),
        "total": d.total,
        "completed": d.completed,
        "dead": d.dead,
        "upstream_failed": d.upstream_failed,
        "cancelled": d.cancelled,
        "percent": d.percent,
        "created": d.created_ms,
        "finished": d.finished_ms or 0,
        "duration_ms": end - d.created_ms if end and d.created_ms else None,
    }


def job_page(
    r: redis.Redis,
    keys: Keys,
    queues: Sequence[str],
    *,
    state: str = "active",
    queue: str = "",
    page: Any = 1,
    per_page: Any = PER_PAGE,
    now_ms: int,
) -> dict[str, Any]:
    """One page of the jobs in ``state`` (waiting, active, delayed, dead), of one queue or
    of all. Waiting jobs in the order they will be claimed, active ones by lease deadline,
    delayed ones by due time, dead ones newest first."""
    if state not in JOB_STATES:
        raise ValueError(f"unknown job state {state!r}: use one of {', '.join(JOB_STATES)}")
    offset, size = page_args(page, per_page)
    shown = [queue] if queue else list(queues)
    if state == "dead":
        ids, total, truncated = _dead_ids(r, keys, queue, offset, size)
    else:
        ids, total = _queued_ids(r, keys, state, shown, offset, size)
        truncated = False
    return {
        "jobs": _job_rows(r, keys, ids, now_ms),
        "state": state,
        "queue": queue,
        "queues": list(queues),
        "page": offset // size + 1,
        "per_page": size,
        "offset": offset,
        "total": total,
        "has_next": offset + size < total and offset + size <= MAX_OFFSET,
        "total_truncated": truncated,
    }


def _set_of(keys: Keys, state: str, queue: str) -> str:
    return {"waiting": keys.wait, "active": keys.active, "delayed": keys.delayed}[state](queue)


def _queued_ids(
    r: redis.Redis, keys: Keys, state: str, queues: Sequence[str], offset: int, size: int
) -> tuple[list[str], int]:
    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.zcard(_set_of(keys, state, q))
        if len(queues) == 1:
            pipe.zrange(_set_of(keys, state, q), offset, offset + size - 1, withscores=True)
        else:
            # Merged across queues by score (the scores mean the same in every queue):
            # each queue's first offset + size members hold the page.
            pipe.zrange(_set_of(keys, state, q), 0, offset + size - 1, withscores=True)
    replies = pipe.execute()
    total = sum(int(c) for c in replies[0::2])
    members = heapq.merge(*replies[1::2], key=lambda m: m[1])
    ids = [as_str(m) for m, _ in members]
    return (ids if len(queues) == 1 else ids[offset : offset + size]), total


def _dead_ids(
    r: redis.Redis, keys: Keys, queue: str, offset: int, size: int
) -> tuple[list[str], int, bool]:
    """Dead jobs newest first; by queue among the newest ``DEAD_FILTER_WINDOW`` (the dead
    set is namespace-wide)."""
    if not queue:
        ids = [as_str(m) for m in r.zrevrange(keys.dead, offset, offset + size - 1)]
        return ids, int(r.zcard(keys.dead)), False
    window = [as_str(m) for m in r.zrevrange(keys.dead, 0, DEAD_FILTER_WINDOW - 1)]
    pipe = r.pipeline(transaction=False)
    for jid in window:
        pipe.hget(keys.job(jid), "queue")
    mine = [j for j, q in zip(window, pipe.execute(), strict=True) if q and as_str(q) == queue]
    truncated = len(window) >= DEAD_FILTER_WINDOW
    return mine[offset : offset + size], len(mine), truncated


def _job_rows(r: redis.Redis, keys: Keys, ids: Sequence[str], now_ms: int) -> list[dict[str, Any]]:
    pipe = r.pipeline(transaction=False)
    for jid in ids:
        pipe.hgetall(keys.job(jid))
        pipe.hgetall(keys.job_progress(jid))
    replies = pipe.execute()
    rows = []
    for n, jid in enumerate(ids):
        raw, progress = replies[2 * n], replies[2 * n + 1]
        if not raw:
            continue  # finished and pruned since the set was read
        f = job_fields(jid, raw)[0]
        started, finished = _int(f.get("started")), _int(f.get("finished"))
        state = f.get("state", "")
        p = as_str_dict(progress) if progress and state == "active" else {}
        rows.append(
            {
                "id": jid,
                "dag": f["dag"],
                "name": f["name"],
                "stage": f.get("stage", ""),
                "queue": f.get("queue", ""),
                "state": state,
                "attempts": _int(f.get("attempts")),
                "max_attempts": _int(f.get("max_attempts")),
                "worker": f.get("worker", "") if state == "active" else "",
                "created": _int(f.get("created")),
                "started": started,
                "finished": finished,
                "run_at": _int(f.get("run_at")),
                "running_ms": now_ms - started if state == "active" and started else None,
                "percent": _float(f.get("pct")),
                "fps": p.get("fps", ""),
                "speed": p.get("speed", ""),
                "eta": p.get("eta", ""),
                "message": p.get("message", ""),
                "error": _error_line(f.get("error")),
            }
        )
    return rows


class JobRates:
    """Jobs done and failed per minute, from the growth of each worker's heartbeat
    counters between two reads (bounded: ``CHART_MINUTES`` minutes, the live workers).

    A worker's jobs before the dashboard first saw it are not counted (when they ran is
    not known), nor are jobs while no page is open; a restarted worker starts again
    from zero, which is not counted as negative.
    """

    def __init__(self) -> None:
        self.since_ms = 0
        self._totals: dict[str, tuple[int, int]] = {}
        self._minutes: dict[int, list[int]] = {}

    def observe(self, now_ms: int, workers: Sequence[Mapping[str, Any]]) -> None:
        self.since_ms = self.since_ms or now_ms
        minute = now_ms - now_ms % 60_000
        bucket = self._minutes.setdefault(minute, [0, 0])
        seen: dict[str, tuple[int, int]] = {}
        for w in workers:
            done, failed = int(w["jobs_done"]), int(w["jobs_failed"])
            before = self._totals.get(w["id"])
            if before is not None:
                bucket[0] += max(0, done - before[0])
                bucket[1] += max(0, failed - before[1])
            seen[w["id"]] = (done, failed)
        self._totals = seen
        oldest = minute - 60_000 * CHART_MINUTES
        for m in [m for m in self._minutes if m <= oldest]:
            del self._minutes[m]

    def per_minute(self, starts: Sequence[int]) -> tuple[list[int], list[int]]:
        counts = [self._minutes.get(s, [0, 0]) for s in starts]
        return [c[0] for c in counts], [c[1] for c in counts]


def charts(
    r: redis.Redis,
    keys: Keys,
    now_ms: int,
    rates: JobRates | None = None,
    minutes: int = CHART_MINUTES,
) -> dict[str, Any]:
    """DAGs completed, DAGs failed or cancelled, jobs dead, and (from ``rates``) jobs done
    and failed, per minute, oldest first."""
    end = now_ms - now_ms % 60_000 + 60_000  # the end of the current minute
    starts = [end - 60_000 * (minutes - i) for i in range(minutes)]
    pipe = r.pipeline(transaction=False)
    for key in (keys.dags_done, keys.dags_failed, keys.dead):
        for s in starts:
            pipe.zcount(key, s, f"({s + 60_000}")
    counts = [int(c) for c in pipe.execute()]
    done, failed = rates.per_minute(starts) if rates else ([0] * minutes, [0] * minutes)
    return {
        "minute_starts": starts,
        "dags_completed": counts[:minutes],
        "dags_failed": counts[minutes : 2 * minutes],
        "jobs_dead": counts[2 * minutes :],
        "jobs_done": done,
        "jobs_failed": failed,
        "jobs_counted_since_ms": rates.since_ms if rates else 0,
        "now_ms": now_ms,
    }


def _int(v: Any) -> int:
    try:
        return int(float(v)) if v not in (None, "") else 0
    except (TypeError, ValueError):
        return 0


def _float(v: Any) -> float:
    try:
        return round(float(v or 0), 1)
    except (TypeError, ValueError):
        return 0.0


def _error_line(raw: str | None) -> str:
    if not raw:
        return ""
    try:
        e = json.loads(raw)
    except ValueError:
        return raw[:300]
    if isinstance(e, dict):
        return f"{e.get('type') or 'Error'}: {e.get('message', '')}"[:300]
    return str(e)[:300]
