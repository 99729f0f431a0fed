"""What the dashboard shows, read from Redis as plain JSON-ready dicts.

Every read is bounded (a fixed number of stream entries, DAGs, dead jobs, jobs per DAG)
and pipelined, so a page polling once a second costs a few round trips however large the
namespace grows. Counts computed from a bounded sample say so with ``*_truncated``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from mediajobs.dashboard.listings import JobRates
from pipeline.client import Client
from pipeline.clock import redis_now_ms
from pipeline.layout import dag_fields, job_fields
from pipeline.rollup import DagRollup

# How far back the dashboard looks; enough for an operator's screen, cheap to read.
RECENT_EVENTS = 1000  # global stream entries scanned for recently active DAGs
CANDIDATE_DAGS = 100  # most recently active DAGs read, of which the newest are shown
SHOWN_EVENTS = 40
SHOWN_DAGS = 25
SHOWN_DEAD = 100
COUNTED = 1000  # members sampled per set when splitting dead/failed counts by queue
DAG_JOBS = 500  # jobs drawn per DAG graph
BREAKER_TTL = 10.0  # breakers are read again this often
KNOWN_BREAKERS = 200  # service names remembered from breaker events
BREAKER_EVENTS = ("breaker_opened", "breaker_half_open", "breaker_closed")

DAG_FIELDS = (
    "state",
    "total",
    "open",
    "dead",
    "upstream",
    "cancelled",
    "pct_sum",
    "created",
    "finished",
    "meta",
)
# The job hash also holds the lease token (`owner`); it is never sent to the browser,
# since whoever holds it can complete or fail the job.
JOB_FIELDS = (
    "name",
    "stage",
    "queue",
    "state",
    "attempts",
    "max_attempts",
    "pct",
    "error",
    "params",
    "worker",
    "started",
    "finished",
    "waiting_for",
)


def _s(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _int(v: Any) -> int:
    try:
        return int(float(_s(v))) if v not in (None, b"", "") else 0
    except ValueError:
        return 0


def _json(v: Any) -> Any:
    """A JSON field as data; a value that is not JSON comes back as its text."""
    if v in (None, b"", ""):
        return None
    try:
        return json.loads(_s(v))
    except ValueError:
        return _s(v)


class Snapshots:
    """Reads for one namespace; holds the few values worth caching between polls."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.keys = client.keys
        self._breakers: tuple[float, dict[str, dict[str, str]]] = (0.0, {})
        self._breaker_names: dict[str, None] = {}  # seen in breaker events, oldest first
        self.job_rates = JobRates()  # jobs per minute, from the workers' heartbeats

    @property
    def schedules_key(self) -> str:
        # Written by pipeline/schedules.py: one JSON document per schedule name.
        return self.keys.schedules

    def now_ms(self) -> int:
        """Redis's clock, so heartbeat ages do not depend on this host's clock."""
        return redis_now_ms(self.client.redis)

    # -- the overview ---------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        now_ms = self.now_ms()
        workers = self.workers()
        self.job_rates.observe(now_ms, workers)
        return {
            "namespace": self.keys.namespace,
            "now_ms": now_ms,
            "queues": self.queues(),
            "dead_total": int(self.client.redis.zcard(self.keys.dead)),
            "workers": workers,
            "capability_gaps": self.client.capability_gaps(),
            "dags": self.dags(),
            "dead": self.dead(),
            "schedules": self.schedules(),
            "events": self.events(),
            "breakers": self.breakers(),
        }

    def queues(self) -> list[dict[str, Any]]:
        names = self.client.queues()
        r = self.client.redis
        pipe = r.pipeline(transaction=False)
        for q in names:
            pipe.zcard(self.keys.wait(q))
            pipe.zcard(self.keys.active(q))
            pipe.zcard(self.keys.delayed(q))
            pipe.hget(self.keys.meta(q), "paused")
            pipe.zrange(self.keys.delayed(q), 0, COUNTED - 1)
        pipe.zrange(self.keys.dead, 0, COUNTED - 1)
        replies = pipe.execute()
        dead_ids = [_s(i) for i in replies[-1]]
        delayed_ids = {q: [_s(i) for i in replies[5 * n + 4]] for n, q in enumerate(names)}

        # Dead jobs live in one namespace-wide set; split them by the queue they came from.
        pipe = r.pipeline(transaction=False)
        for jid in dead_ids:
            pipe.hget(self.keys.job(jid), "queue")
        dead_by_queue = Counter(_s(q) for q in pipe.execute() if q is not None)

        # "failed": delayed jobs that carry an error, i.e. a failed attempt waiting out
        # its back-off before the next one (deferred or scheduled jobs carry none).
        pipe = r.pipeline(transaction=False)
        for q in names:
            for jid in delayed_ids[q]:
                pipe.hmget(self.keys.job(jid), "error", "attempts")
        flags = iter(pipe.execute())
        out = []
        for n, q in enumerate(names):
            sampled = [next(flags) for _ in delayed_ids[q]]
            failed = sum(1 for error, attempts in sampled if error and _int(attempts) > 0)
            waiting, active, delayed, paused = replies[5 * n : 5 * n + 4]
            out.append(
                {
                    "name": q,
                    "waiting": int(waiting),
                    "active": int(active),
                    "delayed": int(delayed),
                    "failed": failed,
                    "dead": dead_by_queue.get(q, 0),
                    "paused": paused is not None and _s(paused) == "1",
                    "counts_truncated": int(delayed) > COUNTED or len(dead_ids) >= COUNTED,
                }
            )
        return out

    def workers(self) -> list[dict[str, Any]]:
        beats = self.client.worker_beats()
        pipe = self.client.redis.pipeline(transaction=False)
        for w in beats:
            pipe.get(self.keys.worker_control(w.id))  # a drain or stop not yet acted on
        asked = [_s(v) if v is not None else "" for v in pipe.execute()] if beats else []
        out = [
            {
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "tags": list(w.tags),
                "queues": list(w.queues),
                "capacity": w.capacity,
                "in_use": w.in_use,
                "load": w.load,
                "cpu_percent": w.cpu_percent,
                "jobs_done": w.jobs_done,
                "jobs_failed": w.jobs_failed,
                "state": w.state,
                "last_seen_ms": w.last_seen_ms,
                "lane": w.lane,
                "asked": command,
            }
            for w, command in zip(beats, asked, strict=True)
        ]
        return sorted(out, key=lambda w: (w["host"], w["id"]))

    def recent_dag_ids(self) -> list[str]:
        """DAGs with recent activity on the global stream, then recently finished ones.

        A DAG that has been running for longer than the last RECENT_EVENTS global events
        without finishing is not listed; ``/api/dags/<id>`` still shows it.
        """
        r = self.client.redis
        seen: dict[str, None] = {}  # an ordered set: most recent activity first
        entries: Any = r.xrevrange(self.keys.events, count=RECENT_EVENTS)
        for _, fields in entries:
            dag = next((_s(v) for k, v in fields.items() if _s(k) == "dag"), "")
            if dag:
                seen.setdefault(dag, None)
                if len(seen) >= CANDIDATE_DAGS:
                    break
        for key in (self.keys.dags_done, self.keys.dags_failed):
            finished: Any = r.zrevrange(key, 0, SHOWN_DAGS - 1)
            for dag in finished:
                seen.setdefault(_s(dag), None)
        return list(seen)

    def dags(self, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        ids = list(ids if ids is not None else self.recent_dag_ids())
        pipe = self.client.redis.pipeline(transaction=False)
        for dag in ids:
            pipe.hgetall(self.keys.dag(dag))
        out = []
        for dag, raw in zip(ids, pipe.execute(), strict=True):
            if not raw:  # pruned by retention
                continue
            out.append(_dag_summary(dag, dag_fields(dag, raw)))
        out.sort(key=lambda d: (d["created"], d["id"]), reverse=True)
        return out[:SHOWN_DAGS]

    def dead(self) -> list[dict[str, Any]]:
        r = self.client.redis
        pairs: Any = r.zrange(self.keys.dead, 0, SHOWN_DEAD - 1, withscores=True)
        pipe = r.pipeline(transaction=False)
        for jid, _ in pairs:
            pipe.hgetall(self.keys.job(_s(jid)))
        out = []
        for (jid, score), raw in zip(pairs, pipe.execute(), strict=True):
            if not raw:
                continue
            job = _job(_s(jid), job_fields(_s(jid), raw)[0])
            job["dead_since_ms"] = int(score)
            out.append(job)
        return out

    def schedules(self) -> list[dict[str, Any]]:
        raw: Any = self.client.redis.hgetall(self.schedules_key)
        return [{"name": _s(k), "spec": _json(v)} for k, v in sorted(raw.items())]

    def events(self) -> list[dict[str, Any]]:
        out = []
        entries: Any = self.client.redis.xrevrange(self.keys.events, count=SHOWN_EVENTS)
        for eid, fields in entries:
            f = {_s(k): _s(v) for k, v in fields.items()}
            out.append(
                {
                    "id": _s(eid),
                    "ev": f.pop("ev", ""),
                    "dag": f.pop("dag", ""),
                    "job": f.pop("job", ""),
                    "fields": f,
                }
            )
        return out

    def breakers(self) -> dict[str, dict[str, str]]:
        """The breakers named by breaker events among the last RECENT_EVENTS fleet
        events, and those seen since this dashboard started, as their hashes hold them.

        The engine keeps no index of breakers, and finding their keys with SCAN walks the
        whole keyspace (millions of keys on a busy namespace) on a page's request; a
        breaker that has never opened (no event) is not listed.
        """
        at, cached = self._breakers
        if time.monotonic() - at > BREAKER_TTL:
            r = self.client.redis
            entries: Any = r.xrevrange(self.keys.events, count=RECENT_EVENTS)
            for _, fields in reversed(entries):
                f = {_s(k): _s(v) for k, v in fields.items()}
                if f.get("ev") in BREAKER_EVENTS and f.get("service"):
                    self._breaker_names.pop(f["service"], None)
                    self._breaker_names[f["service"]] = None
            while len(self._breaker_names) > KNOWN_BREAKERS:
                del self._breaker_names[next(iter(self._breaker_names))]
            names = sorted(self._breaker_names)
            pipe = r.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self.keys.breaker(name))
            cached = {
                name: {_s(k): _s(v) for k, v in raw.items()}
                for name, raw in zip(names, pipe.execute(), strict=True)
                if raw
            }
            self._breakers = (time.monotonic(), cached)
        return cached

    # -- one DAG ----------------------------------------------------------------
    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG with its jobs and the edges between them (child -> parent)."""
        r = self.client.redis
        raw: Any = r.hgetall(self.keys.dag(dag_id))
        if not raw:
            return None
        summary = _dag_summary(dag_id, dag_fields(dag_id, raw))
        ids = sorted(_s(i) for i in r.smembers(self.keys.dag_jobs(dag_id)))
        shown = ids[:DAG_JOBS]
        pipe = r.pipeline(transaction=False)
        for jid in shown:
            pipe.hgetall(self.keys.job(jid))
            pipe.hgetall(self.keys.job_deps(jid))  # schema 1 kept them apart
            pipe.hget(self.keys.job_progress(jid), "message")
        replies = pipe.execute()
        jobs = []
        for n, jid in enumerate(shown):
            raw_job, old_deps, message = replies[3 * n : 3 * n + 3]
            if not raw_job:
                continue
            fields, deps = job_fields(jid, raw_job)
            job = _job(jid, fields)
            job["deps"] = {**{_s(k): _s(v) for k, v in old_deps.items()}, **deps}
            job["message"] = _s(message) if message is not None else ""
            jobs.append(job)
        return {**summary, "jobs": jobs, "jobs_truncated": len(ids) > len(shown)}


def _dag_summary(dag_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    f = {k: fields.get(k) for k in DAG_FIELDS}
    rollup = DagRollup.from_hash(f)
    meta = _json(f["meta"])
    return {
        "id": dag_id,
        "state": _s(f["state"]),
        "total": rollup.total,
        "completed": rollup.completed,
        "dead": rollup.dead,
        "upstream_failed": rollup.upstream,
        "cancelled": rollup.cancelled,
        "percent": rollup.percent,
        "created": _int(f["created"]),
        "finished": _int(f["finished"]),
        "meta": meta if isinstance(meta, dict) else {},
    }


def _job(job_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    f = {k: fields.get(k) for k in ("dag", *JOB_FIELDS)}
    error = _json(f["error"])
    return {
        "id": job_id,
        "dag": _s(f["dag"] or b""),
        "name": _s(f["name"] or b""),
        "stage": _s(f["stage"] or b""),
        "queue": _s(f["queue"] or b""),
        "state": _s(f["state"] or b""),
        "attempts": _int(f["attempts"]),
        "max_attempts": _int(f["max_attempts"]),
        "percent": float(_s(f["pct"] or b"0") or 0),
        "error": error if isinstance(error, dict) or error is None else {"message": error},
        "params": _json(f["params"]),
        "worker": _s(f["worker"] or b""),
        "started": _int(f["started"]),
        "finished": _int(f["finished"]),
        "waiting_for": _s(f["waiting_for"] or b""),
    }
