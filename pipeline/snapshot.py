"""Many DAGs read at once, for a display that redraws several times a second.

``Client.dag`` and ``Client.jobs`` cost two round trips per job; a batch of 120 photos is
360 jobs, so a view polling that way spends its time waiting on Redis. ``read_dags`` reads
every DAG's hash, job set, jobs and progress hashes in two pipelined round trips, with
Redis' own clock (the jobs' ``started``/``finished`` stamps are Redis time), through the
layout readers (``pipeline.layout``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from pipeline.keys import Keys
from pipeline.layout import dag_fields, job_fields
from pipeline.replies import as_str, as_str_dict
from pipeline.rollup import DagRollup


@dataclass(frozen=True)
class JobSnapshot:
    id: str
    name: str
    stage: str
    state: str  # waiting, waiting_children, delayed, active, completed, dead, ...
    queue: str
    params: dict[str, Any]
    percent: float  # the running attempt's own percent (0 once it ended or was reset)
    attempts: int
    started_ms: int  # the latest attempt's claim (Redis time), 0 before any
    finished_ms: int  # 0 until it ended
    run_at_ms: int  # a delayed job's due time
    children: tuple[str, ...]  # the jobs it waits for (names)
    progress: dict[str, str] = field(default_factory=dict)  # fps, speed, eta, message
    result: Any = None  # parsed, for completed probe jobs only (the media facts)


@dataclass(frozen=True)
class DagSnapshot:
    id: str
    state: str  # running, completed, failed, cancelled, building
    finished: bool
    percent: float  # the engine's unweighted roll-up (each job counts the same)
    meta: dict[str, Any]
    jobs: dict[str, JobSnapshot]  # by name


@dataclass(frozen=True)
class Snapshot:
    now_ms: int  # Redis' clock when read
    dags: dict[str, DagSnapshot]  # DAGs that exist, by id (a pruned one is absent)


# Only these stages' results are read back: a probe's facts weigh the stages after it.
_RESULT_STAGES = frozenset({"probe"})


def read_dags(client: redis.Redis, keys: Keys, dag_ids: Sequence[str]) -> Snapshot:
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for d in dag_ids:
        pipe.hgetall(keys.dag(d))
        pipe.smembers(keys.dag_jobs(d))
    first = pipe.execute()
    sec, usec = first[0]
    now_ms = int(sec) * 1000 + int(usec) // 1000
    job_ids: list[str] = []
    present: dict[str, dict[str, str]] = {}
    members: dict[str, list[str]] = {}
    for i, d in enumerate(dag_ids):
        raw, ids = first[1 + 2 * i], first[2 + 2 * i]
        if not raw:
            continue
        present[d] = dag_fields(d, raw)
        members[d] = sorted(as_str(m) for m in ids)
        job_ids.extend(members[d])
    for jid in job_ids:
        pipe.hgetall(keys.job(jid))
        pipe.hgetall(keys.job_progress(jid))
    second = pipe.execute() if job_ids else []
    jobs: dict[str, JobSnapshot] = {}
    for i, jid in enumerate(job_ids):
        if second[2 * i]:
            jobs[jid] = _job(jid, second[2 * i], second[2 * i + 1])
    dags: dict[str, DagSnapshot] = {}
    for d, fields in present.items():
        try:
            meta = json.loads(fields.get("meta") or "{}")
        except ValueError:
            meta = {}
        dags[d] = DagSnapshot(
            id=d,
            state=fields.get("state", ""),
            finished=bool(fields.get("finished")),
            percent=DagRollup.from_hash(fields).percent,
            meta=meta if isinstance(meta, dict) else {},
            jobs={j.name: j for j in (jobs.get(jid) for jid in members[d]) if j is not None},
        )
    return Snapshot(now_ms, dags)


def _job(job_id: str, raw: Any, progress: Any) -> JobSnapshot:
    fields, deps = job_fields(job_id, raw)
    try:
        params = json.loads(fields.get("params") or "{}")
    except ValueError:
        params = {}
    result = None
    if fields.get("stage") in _RESULT_STAGES and fields.get("result"):
        try:
            result = json.loads(fields["result"])
        except ValueError:
            result = None
    return JobSnapshot(
        id=job_id,
        name=fields["name"],
        stage=fields.get("stage", ""),
        state=fields.get("state", ""),
        queue=fields.get("queue", ""),
        params=params if isinstance(params, dict) else {},
        percent=_float(fields.get("pct")),
        attempts=int(_float(fields.get("attempts"))),
        started_ms=int(_float(fields.get("started"))),
        finished_ms=int(_float(fields.get("finished"))),
        run_at_ms=int(_float(fields.get("run_at"))),
        children=tuple(sorted(c.partition("/")[2] for c in deps)),
        progress=as_str_dict(progress) if progress else {},
        result=result,
    )


def _float(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0
