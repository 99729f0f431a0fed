"""The newest DAGs of a namespace, for ``mediapipe status`` without a DAG id.

The engine keeps no index of DAGs by creation time, and none of the running ones (adding
one would mean a write on every submit and every close, in the Lua transitions). What it
keeps already, and what this reads, newest first and in bounded pages:

- the fleet event stream (``{ns}:events``): a ``submitted`` event for every DAG, in the
  order they were submitted, capped at 100,000 entries and ``Retention.events_age``
  (a DAG adds 2-3 entries: submitted, its end, a dead job or a stall). Read with
  ``XREVRANGE`` pages of ``PAGE`` entries, at most ``MAX_EVENTS`` entries a listing;
- ``dags:done`` and ``dags:failed`` (failed and cancelled): every finished DAG by the time
  it finished, until retention drops it; read with ``ZREVRANGE`` pages;
- ``dags:building``: DAGs still being written in steps;
- each queue's ``active`` set: jobs running now (as many as the fleet has slots), whose
  DAG is the part of the job id before ``/``.

Each candidate's hash is read with pipelined ``HMGET``. No ``SCAN``, no ``KEYS``: a
listing costs a few round trips however many DAGs the namespace holds.

What it cannot see: a DAG whose ``submitted`` event has left the stream (older than the
newest 100,000 events, or than ``events_age``), that has not finished and has no job
running right now, i.e. a DAG waiting in a backlog larger than the stream's window.
``Listing.complete`` is False when such a DAG could be missing from the answer.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from pipeline.keys import Keys
from pipeline.layout import join_long
from pipeline.replies import as_str, as_str_dict
from pipeline.rollup import DagRollup

DAG_STATES = ("building", "running", "completed", "failed", "cancelled")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
PAGE = 500  # stream entries or set members read per round trip
MAX_EVENTS = 20_000  # stream entries read at most per listing (about 7,000 DAGs)
MAX_FINISHED = 20_000  # members of dags:done / dags:failed read at most per listing


@dataclass(frozen=True)
class DagEntry:
    """One DAG as a listing shows it (times in Redis' milliseconds)."""

    id: str
    state: str
    created_ms: int
    finished_ms: int | None
    total: int
    completed: int
    dead: int
    upstream_failed: int
    cancelled: int
    percent: float
    meta: dict[str, Any]


@dataclass(frozen=True)
class Listing:
    dags: list[DagEntry]
    complete: bool  # False: a DAG older than what was read may be missing (see the module)


def recent_dags(
    r: redis.Redis, keys: Keys, *, limit: int = 20, states: Collection[str] = ()
) -> Listing:
    """The ``limit`` most recently submitted DAGs (in ``states``, all when empty), newest
    first by creation time."""
    wanted = frozenset(states) or frozenset(DAG_STATES)
    found: dict[str, DagEntry] = {}
    stream_complete = _from_stream(r, keys, limit, wanted, found)
    finished_complete = True
    if wanted & TERMINAL:
        if wanted & {"completed"}:
            finished_complete &= _from_set(r, keys, keys.dags_done, limit, wanted, found)
        if wanted & {"failed", "cancelled"}:
            finished_complete &= _from_set(r, keys, keys.dags_failed, limit, wanted, found)
    if wanted - TERMINAL:
        building = [as_str(m) for m in r.zrevrange(keys.dags_building, 0, -1)]
        _add(r, keys, building, wanted, found)
        _add(r, keys, _running_now(r, keys), wanted, found)
    # Stable: DAGs created in the same ms stay in the order they were found (newest first).
    dags = sorted(found.values(), key=lambda d: d.created_ms, reverse=True)[:limit]
    # Finished DAGs are all in their sets; an unfinished one only in the stream's window.
    complete = stream_complete or (not wanted - TERMINAL and finished_complete)
    return Listing(dags, complete)


def _from_stream(
    r: redis.Redis, keys: Keys, limit: int, wanted: frozenset[str], found: dict[str, DagEntry]
) -> bool:
    """Walk the fleet stream back from its newest entry until ``limit`` DAGs in ``wanted``
    were submitted after everything left unread. True when nothing submitted earlier can
    be missing: enough were found, or the whole stream was read and never trimmed."""
    upper, read, matched = "+", 0, 0
    while read < MAX_EVENTS:
        page: Any = r.xrevrange(keys.events, max=upper, min="-", count=PAGE)
        if not page:
            return not _stream_trimmed(r, keys.events)
        read += len(page)
        ids = []
        for _, fields in page:
            f = as_str_dict(fields)
            if f.get("ev") == "submitted" and f.get("dag"):
                ids.append(f["dag"])
        matched += _add(r, keys, ids, wanted, found)
        if matched >= limit:
            return True
        upper = "(" + as_str(page[-1][0])
    return False


def _from_set(
    r: redis.Redis,
    keys: Keys,
    key: str,
    limit: int,
    wanted: frozenset[str],
    found: dict[str, DagEntry],
) -> bool:
    """The most recently finished DAGs of ``key`` until ``limit`` of them are in
    ``wanted``; True when the set was read that far (or to its end)."""
    start, matched = 0, 0
    while start < MAX_FINISHED:
        ids = [as_str(m) for m in r.zrevrange(key, start, start + PAGE - 1)]
        matched += _add(r, keys, ids, wanted, found)
        if matched >= limit or len(ids) < PAGE:
            return True
        start += PAGE
    return False


def _running_now(r: redis.Redis, keys: Keys) -> list[str]:
    """The DAGs with a job running now (bounded by the fleet's slots)."""
    queues = sorted(as_str(q) for q in r.smembers(keys.queues))
    pipe = r.pipeline(transaction=False)
    for q in queues:
        pipe.zrange(keys.active(q), 0, -1)
    dags: dict[str, None] = {}
    for members in pipe.execute():
        for m in members:
            dags.setdefault(as_str(m).partition("/")[0], None)
    return list(dags)


def _add(
    r: redis.Redis,
    keys: Keys,
    ids: Iterable[str],
    wanted: frozenset[str],
    found: dict[str, DagEntry],
) -> int:
    """Read the DAGs not read yet; keep those in ``wanted``. Returns how many were kept."""
    todo = list(dict.fromkeys(i for i in ids if i not in found))
    if not todo:
        return 0
    pipe = r.pipeline(transaction=False)
    for dag in todo:
        # The whole hash: `meta` may be kept in pieces (docs/redis-layout.md), and a DAG
        # hash is small (its counters and meta, no job data).
        pipe.hgetall(keys.dag(dag))
    kept = 0
    for dag, raw in zip(todo, pipe.execute(), strict=True):
        if not raw:
            continue  # pruned by retention since its event
        entry = entry_of(dag, raw)
        if entry.state in wanted:
            found[dag] = entry
            kept += 1
    return kept


def entry_of(dag_id: str, raw: Any) -> DagEntry:
    """A DAG hash (HGETALL) as a listing entry."""
    f = join_long(as_str_dict(raw))
    rollup = DagRollup.from_hash(f)
    try:
        meta = json.loads(f.get("meta") or "{}")
    except ValueError:
        meta = {}
    finished = _int(f.get("finished"))
    return DagEntry(
        id=dag_id,
        state=f.get("state", ""),
        created_ms=_int(f.get("created")),
        finished_ms=finished or None,
        total=rollup.total,
        completed=rollup.completed,
        dead=rollup.dead,
        upstream_failed=rollup.upstream,
        cancelled=rollup.cancelled,
        percent=rollup.percent,
        meta=meta if isinstance(meta, dict) else {},
    )


def _int(v: str | None) -> int:
    try:
        return int(float(v)) if v else 0
    except ValueError:
        return 0


def _stream_trimmed(r: redis.Redis, stream: str) -> bool:
    """Whether the stream's cap or retention has dropped entries. Redis >= 7 counts what
    was ever added; on 6.2 it is not known, and the stream is taken as trimmed."""
    try:
        info: Any = r.xinfo_stream(stream)
    except redis.ResponseError:
        return False  # no stream: nothing was ever submitted
    added = info.get("entries-added")
    return added is None or int(added) > int(info["length"])
