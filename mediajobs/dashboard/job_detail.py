"""One job as the dashboard's job view shows it: params, timings, worker, live progress,
every attempt with its error and traceback, and its outputs with links.

Attempts come from the DAG's event stream (``active``, ``failed``, ``retried``,
``stalled``, ``released``, ``deferred``, ``dead``, ``completed``), read newest first and
at most ``HISTORY`` entries, so a DAG with a long progress history costs one bounded
read; ``history_truncated`` says when older entries were not read. A DAG run quietly
(docs/redis-layout.md: no stream) has had one attempt, which its job hash describes.

Output files are the ``{"path": ...}`` objects of the job's result (the stages' output
records). One is linked only when it is a file inside the DAG's ``out_dir``;
``output_file`` finds it again for ``GET /files/...`` by its index, so the browser never
names a path the server would open.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from pipeline.keys import Keys
from pipeline.layout import dag_fields, job_fields
from pipeline.replies import as_str, as_str_dict

HISTORY = 2000  # DAG stream entries read at most for one job's attempts and progress
PROGRESS_POINTS = 120  # progress samples kept for the job's progress history
MAX_OUTPUTS = 100
RESULT_SHOWN = 20_000  # characters of the raw result sent to the page
IMAGE_TYPES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".avif", ".gif"})
VIDEO_TYPES = frozenset({".mp4", ".webm", ".mov", ".m4v"})


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _int(v: Any) -> int:
    try:
        return int(float(v)) if v not in (None, "") else 0
    except (TypeError, ValueError):
        return 0


def _error(raw: Any) -> dict[str, Any] | None:
    """An error field (JSON: type, message, traceback, worker) as an object."""
    value = _json(raw) if isinstance(raw, str) else raw
    if value is None or value == "":
        return None
    return value if isinstance(value, dict) else {"message": str(value)}


def read_job(r: redis.Redis, keys: Keys, job_id: str) -> dict[str, Any] | None:
    """The job view's data, or None for a job that does not exist (or was pruned)."""
    dag_id, _, _ = job_id.partition("/")
    pipe = r.pipeline(transaction=False)
    pipe.time()
    pipe.hgetall(keys.job(job_id))
    pipe.hgetall(keys.job_progress(job_id))
    pipe.hgetall(keys.dag(dag_id))
    pipe.xrevrange(keys.dag_events(dag_id), count=HISTORY)
    pipe.xlen(keys.dag_events(dag_id))
    (sec, usec), raw, progress, raw_dag, entries, length = pipe.execute()
    if not raw:
        return None
    now_ms = int(sec) * 1000 + int(usec) // 1000
    f, deps = job_fields(job_id, raw)
    dag = dag_fields(dag_id, raw_dag) if raw_dag else {}
    meta = _json(dag.get("meta")) if dag else None
    meta = meta if isinstance(meta, dict) else {}
    started, finished = _int(f.get("started")), _int(f.get("finished"))
    state = f.get("state", "")
    events = [(as_str(eid), as_str_dict(fields)) for eid, fields in reversed(entries)]
    mine = [(eid, e) for eid, e in events if e.get("job") == job_id]
    attempts = _attempts(mine, f)
    result = _json(f.get("result"))
    result_text = f.get("result") or ""
    outputs = list(_outputs(job_id, result, meta.get("out_dir")))
    return {
        "id": job_id,
        "dag": dag_id,
        "dag_state": dag.get("state", ""),
        "input": meta.get("input") or meta.get("name") or "",
        "name": f.get("name", ""),
        "stage": f.get("stage", ""),
        "queue": f.get("queue", ""),
        "state": state,
        "attempts": _int(f.get("attempts")),
        "max_attempts": _int(f.get("max_attempts")),
        "stalls": _int(f.get("stalls")),
        "priority": _int(f.get("prio")),
        "tags": [t for t in f.get("tags", "").split(",") if t],
        "timeout_ms": _int(f.get("timeout_ms")),
        "worker": f.get("worker", ""),
        "params": _json(f.get("params")),
        "deps": deps,
        "waiting_for": f.get("waiting_for", ""),
        "created": _int(f.get("created")),
        "started": started,
        "finished": finished,
        "run_at": _int(f.get("run_at")),
        "duration_ms": _duration(state, started, finished, now_ms),
        "now_ms": now_ms,
        "percent": 100.0 if state == "completed" else _percent(f.get("pct")),
        "progress": as_str_dict(progress) if progress else {},
        "progress_history": _progress_history(mine),
        "error": _error(f.get("error")),
        "attempt_log": attempts,
        "history_truncated": int(length) > len(entries),
        "outputs": outputs,
        "result": result_text[:RESULT_SHOWN],
        "result_truncated": len(result_text) > RESULT_SHOWN,
    }


def _percent(v: str | None) -> float:
    try:
        return round(float(v or 0), 1)
    except ValueError:
        return 0.0


def _duration(state: str, started: int, finished: int, now_ms: int) -> int | None:
    """The latest attempt's run time; still counting while it runs."""
    if not started:
        return None
    if finished and finished >= started:
        return finished - started
    return now_ms - started if state == "active" else None


def _attempts(events: list[tuple[str, dict[str, str]]], f: dict[str, str]) -> list[dict[str, Any]]:
    """One entry per claim, in order, with how it ended; notes for what happened between."""
    out: list[dict[str, Any]] = []

    def current() -> dict[str, Any] | None:
        return out[-1] if out and out[-1]["kind"] == "attempt" and not out[-1]["ended"] else None

    def end(at: int, outcome: str, error: dict[str, Any] | None = None) -> None:
        a = current()
        if a is None:
            out.append({"kind": "note", "at": at, "outcome": outcome, "error": error})
            return
        a.update(ended=at, outcome=outcome)
        if error is not None:
            a["error"] = error

    for eid, e in events:
        at, ev = _int(eid.split("-", 1)[0]), e.get("ev", "")
        if ev == "active":
            out.append(
                {
                    "kind": "attempt",
                    "attempt": _int(e.get("attempt")),
                    "worker": e.get("worker", ""),
                    "started": at,
                    "ended": 0,
                    "outcome": "running",
                    "error": None,
                }
            )
        elif ev == "completed":
            end(at, "completed")
        elif ev == "failed":
            end(at, "failed", _error(e.get("error")))
        elif ev == "dead":  # the last attempt failed (or a permanent error): no "failed"
            end(at, "dead", _error(e.get("error")))
        elif ev == "stalled":
            end(at, "stalled: its worker stopped renewing the lease")
        elif ev == "released":
            end(at, "handed back to the queue")
        elif ev == "deferred":
            end(at, f"deferred: waiting for {e.get('reason', '')}")
        elif ev == "retried":
            how = (
                "retried from the dead-letter queue"
                if e.get("from") == "dead"
                else f"retry in {_int(e.get('delay_ms')) / 1000:g}s"
            )
            out.append({"kind": "note", "at": at, "outcome": how, "error": None})
        elif ev == "upstream_failed":
            out.append({"kind": "note", "at": at, "outcome": "upstream failed", "error": None})
    if not any(a["kind"] == "attempt" for a in out) and _int(f.get("started")):
        # A quiet run (no stream) or history older than what was read: the hash's facts.
        state = f.get("state", "")
        out.append(
            {
                "kind": "attempt",
                "attempt": _int(f.get("attempts")),
                "worker": f.get("worker", ""),
                "started": _int(f.get("started")),
                "ended": _int(f.get("finished")),
                "outcome": "running" if state == "active" else state,
                "error": _error(f.get("error")) if state != "completed" else None,
            }
        )
    return out


def _progress_history(events: list[tuple[str, dict[str, str]]]) -> list[dict[str, Any]]:
    points = []
    for eid, e in events:
        if e.get("ev") == "progress":
            point: dict[str, Any] = {"at": _int(eid.split("-", 1)[0])}
            for k in ("percent", "fps", "speed"):
                with contextlib.suppress(KeyError, ValueError):
                    point[k] = float(e[k])
            points.append(point)
    return points[-PROGRESS_POINTS:]


def _paths(value: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    """The ``{"path": ...}`` objects in a result, in document order."""
    if depth > 8:
        return
    if isinstance(value, dict):
        if isinstance(value.get("path"), str):
            yield value
        for v in value.values():
            yield from _paths(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _paths(v, depth + 1)


def _inside(path: str, out_dir: Any) -> Path | None:
    """The file ``path`` names, when it is a regular file inside ``out_dir``."""
    if not isinstance(out_dir, str) or not out_dir or not os.path.isabs(path):
        return None
    try:
        real = Path(path).resolve(strict=True)
        root = Path(out_dir).resolve(strict=True)
    except OSError:
        return None
    return real if real.is_relative_to(root) and real.is_file() else None


def _outputs(job_id: str, result: Any, out_dir: Any) -> Iterator[dict[str, Any]]:
    for n, o in enumerate(_paths(result)):
        if n >= MAX_OUTPUTS:
            return
        path = str(o["path"])
        suffix = Path(path).suffix.lower()
        kind = "image" if suffix in IMAGE_TYPES else "video" if suffix in VIDEO_TYPES else "file"
        served = _inside(path, out_dir) is not None
        yield {
            "path": path,
            "bytes": _int(o.get("bytes")) or None,
            "width": _int(o.get("width")) or None,
            "height": _int(o.get("height")) or None,
            "kind": kind,
            "url": f"/files/{job_id}/{n}" if served else None,
        }


def output_file(r: redis.Redis, keys: Keys, job_id: str, index: int) -> Path | None:
    """The ``index``-th output of the job, when it is a file inside its DAG's out_dir."""
    dag_id = job_id.partition("/")[0]
    raw_job: Any = r.hgetall(keys.job(job_id))
    raw_dag: Any = r.hgetall(keys.dag(dag_id))
    if not raw_job or not raw_dag:
        return None
    result = _json(job_fields(job_id, raw_job)[0].get("result"))
    meta = _json(dag_fields(dag_id, raw_dag).get("meta"))
    out_dir = meta.get("out_dir") if isinstance(meta, dict) else None
    for n, o in enumerate(_paths(result)):
        if n == index:
            return _inside(str(o["path"]), out_dir)
        if n >= MAX_OUTPUTS:
            break
    return None


__all__ = ["output_file", "read_job"]
