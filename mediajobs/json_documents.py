"""The ``--json`` documents of ``status``, ``dlq``, ``workers`` and ``submit``: typed (ints
as ints, nested objects as objects), the same field names everywhere, and a ``schema``
version a script can check. docs/json-output.md describes them; the JSON Schemas in
mediajobs/json_schemas/ are what tests/cli/test_json_output.py checks every output against.

Raise ``SCHEMA`` when a field changes meaning or goes away; adding a field keeps it.
Redis stores strings (and long values in pieces, read back by pipeline/layout.py through
``Client``); this module is where they become numbers, objects and nulls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.recent_dags import DagEntry, Listing
from pipeline.serving import Unserved
from pipeline.worker_beat import WorkerBeat

SCHEMA = 1


def _int_or_none(v: Any) -> int | None:
    """A stored time or count: None when absent, empty or 0 (the layout's "not set")."""
    try:
        n = int(float(v))
    except (TypeError, ValueError):
        return None
    return n or None


def _int(v: Any) -> int:
    return _int_or_none(v) or 0


def _number(v: Any) -> float | int | str:
    """A progress value as a number when it is one (fps, eta, done), else its text."""
    if isinstance(v, int | float):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return str(v)
    return int(f) if f.is_integer() and "." not in str(v) else f


def _seconds(start_ms: int | None, end_ms: int | None) -> float | None:
    if start_ms is None or end_ms is None:
        return None
    return round(max(0, end_ms - start_ms) / 1000, 3)


def dag_entry(entry: DagEntry, now_ms: int) -> dict[str, Any]:
    """A DAG in a listing (``status --json`` without a DAG id)."""
    return {
        "id": entry.id,
        "state": entry.state,
        "input": _text_or_none(entry.meta.get("input")),
        "preset": _text_or_none(entry.meta.get("preset")),
        "total": entry.total,
        "completed": entry.completed,
        "dead": entry.dead,
        "upstream_failed": entry.upstream_failed,
        "cancelled": entry.cancelled,
        "percent": float(entry.percent),
        "created_ms": entry.created_ms,
        "finished_ms": entry.finished_ms,
        "age_s": _seconds(entry.created_ms, now_ms),
        "duration_s": _seconds(entry.created_ms, entry.finished_ms or now_ms),
    }


def overview(
    listing: Listing,
    now_ms: int,
    *,
    limit: int,
    states: list[str],
    queues: Mapping[str, Mapping[str, int]],
    leases_expired: Mapping[str, int],
    dead: int,
    workers: list[WorkerBeat],
    gaps: Mapping[str, int],
    breakers: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """``status --json`` without a DAG id: the recent DAGs and the fleet."""
    return {
        "schema": SCHEMA,
        "kind": "status",
        "now_ms": now_ms,
        "limit": limit,
        "states": states,
        "complete": listing.complete,
        "dags": [dag_entry(d, now_ms) for d in listing.dags],
        "queues": {
            q: {
                "waiting": int(c["waiting"]),
                "active": int(c["active"]),
                "delayed": int(c["delayed"]),
                "paused": bool(c["paused"]),
                "leases_expired": int(leases_expired.get(q, 0)),
            }
            for q, c in queues.items()
        },
        "dead": dead,
        "workers": [worker(w) for w in sorted(workers, key=lambda b: (b.host, b.id))],
        # Waiting jobs (by queue) that no live worker takes: with no worker at all they
        # wait for a worker, else for a capability (tags) no live worker has.
        "waiting_for_a_worker": dict(gaps) if not workers else {},
        "waiting_for_capability": dict(gaps) if workers else {},
        "breakers": {
            name: {str(k): _number(v) if k != "state" else str(v) for k, v in b.items()}
            for name, b in breakers.items()
        },
    }


def dag(d: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """One DAG as ``Client.dag`` reads it."""
    created = _int_or_none(d.get("created"))
    finished = _int_or_none(d.get("finished"))
    meta: dict[str, Any] = d["meta"] if isinstance(d.get("meta"), dict) else {}
    return {
        "id": str(d["id"]),
        "state": str(d.get("state", "")),
        "input": _text_or_none(meta.get("input")),
        "preset": _text_or_none(meta.get("preset")),
        "meta": meta,
        "total": _int(d.get("total")),
        "completed": _int(d.get("completed")),
        "open": _int(d.get("open")),
        "dead": _int(d.get("dead")),
        "upstream_failed": _int(d.get("upstream")),
        "cancelled": _int(d.get("cancelled")),
        "percent": float(d.get("percent") or 0),
        "created_ms": created,
        "finished_ms": finished,
        "age_s": _seconds(created, now_ms),
        "duration_s": _seconds(created, finished or now_ms),
        "idempotency_key": _text_or_none(d.get("idem")),
        # The delivery DAG its webhook's latest event went out as (docs/webhooks.md).
        "webhook_event": _text_or_none(d.get("webhook_event")),
    }


def job(j: Mapping[str, Any], *, lease_expired_ms: int | None = None) -> dict[str, Any]:
    """One job as ``Client.job`` reads it. The lease token (``owner``) is left out: whoever
    holds it can complete or fail the job."""
    started = _int_or_none(j.get("started"))
    finished = _int_or_none(j.get("finished"))
    state = str(j.get("state", ""))
    error = j.get("error")
    if isinstance(error, str):
        error = {"type": "", "message": error}
    progress = j.get("progress") or {}
    return {
        "id": str(j["id"]),
        "dag": str(j.get("dag", "")),
        "name": str(j.get("name", "")),
        "stage": str(j.get("stage", "")),
        "queue": str(j.get("queue", "")),
        "state": state,
        "attempts": _int(j.get("attempts")),
        "max_attempts": _int(j.get("max_attempts")),
        "stalls": _int(j.get("stalls")),
        "priority": int(float(j.get("prio") or 0)),
        "percent": float(j.get("pct") or 0),
        "progress": {
            str(k): (str(v) if k == "message" else _number(v)) for k, v in progress.items()
        },
        "params": j.get("params") if isinstance(j.get("params"), dict) else None,
        "result": j.get("result") if j.get("result") not in ("", None) else None,
        # An error stays in the hash after a later attempt succeeds: a completed job
        # has none; the attempt that failed is in `last_error`.
        "error": error if isinstance(error, dict) and state != "completed" else None,
        "last_error": error if isinstance(error, dict) else None,
        "worker": _text_or_none(j.get("worker")),
        "created_ms": _int_or_none(j.get("created")),
        "started_ms": started,
        "finished_ms": finished,
        "duration_s": _seconds(started, finished),
        "timeout_ms": _int_or_none(j.get("timeout_ms")),
        "waiting_for": _text_or_none(j.get("waiting_for")),
        "lease_expired_ms": lease_expired_ms,
    }


def unserved(items: list[Unserved]) -> list[dict[str, Any]]:
    return [
        {"queue": u.queue, "reason": u.reason, "message": u.message, "jobs": u.jobs} for u in items
    ]


def dag_status(
    d: Mapping[str, Any],
    jobs: Mapping[str, Mapping[str, Any]],
    *,
    now_ms: int,
    workers_alive: int,
    lapsed: Mapping[str, int],
    not_served: list[Unserved],
) -> dict[str, Any]:
    """``status DAG_ID --json``."""
    return {
        "schema": SCHEMA,
        "kind": "dag_status",
        "now_ms": now_ms,
        "dag": dag(d, now_ms),
        "jobs": {name: job(j, lease_expired_ms=lapsed.get(name)) for name, j in jobs.items()},
        "workers_alive": workers_alive,
        "unserved": unserved(not_served),
    }


def worker(w: WorkerBeat) -> dict[str, Any]:
    try:
        cpu: float | None = float(w.cpu_percent)
    except ValueError:
        cpu = None
    return {
        "id": w.id,
        "host": w.host,
        "pid": w.pid,
        "state": w.state,
        "queues": list(w.queues),
        "tags": list(w.tags),
        "capacity": w.capacity,
        "in_use": w.in_use,
        "load": float(w.load),
        "cpu_percent": cpu,
        "jobs_done": w.jobs_done,
        "jobs_failed": w.jobs_failed,
        "lane": w.lane or None,
        "gpus": w.gpus or None,
        "capacity_reason": w.capacity_reason or None,
        "last_seen_ms": w.last_seen_ms or None,
    }


def workers(beats: list[WorkerBeat], now_ms: int) -> dict[str, Any]:
    """``workers --json``."""
    return {
        "schema": SCHEMA,
        "kind": "workers",
        "now_ms": now_ms,
        "workers": [worker(w) for w in sorted(beats, key=lambda b: (b.host, b.id))],
    }


def dead_job(j: Mapping[str, Any], dead_since_ms: int | None) -> dict[str, Any]:
    return {**job(j), "dead_since_ms": dead_since_ms}


def dead_list(
    jobs: Sequence[tuple[Mapping[str, Any], int | None]], *, total: int, limit: int
) -> dict[str, Any]:
    """``dlq list --json``: the oldest ``limit`` dead jobs."""
    return {
        "schema": SCHEMA,
        "kind": "dead_list",
        "total": total,
        "limit": limit,
        "dead": [dead_job(j, since) for j, since in jobs],
    }


def dead_show(j: Mapping[str, Any], dead_since_ms: int | None) -> dict[str, Any]:
    """``dlq show JOB_ID --json``."""
    return {"schema": SCHEMA, "kind": "dead_job", "job": dead_job(j, dead_since_ms)}


def _text_or_none(v: Any) -> str | None:
    return None if v in (None, "") else str(v)
