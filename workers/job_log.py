"""One log line per job start and end, from every runner (the worker node, the inline
runner, the batch lanes), at INFO on the ``mediapipe.jobs`` logger, as Celery's worker
says "Task ... received" and "... succeeded in 0.41s".

A line carries the event (``started``, then ``done``, ``retry``, ``dead``, ``cancelled``,
``deferred`` or ``discarded``: the outcome workers/outcomes.py recorded), the DAG, the job,
its stage and queue, the attempt, the duration in seconds (null on ``started``) and the
worker; an error line adds ``error``. Plain::

    2026-12-01 05:12:03,114 INFO mediapipe.jobs: job done dag=6d0e... job=6d0e.../probe
    stage=probe queue=default attempt=1/3 duration=0.412s worker=host-1234-ab12

and with ``--log-format json`` the same fields are the object's keys.

The per-job path is hot (tens of microseconds of CPU per job): callers test
``log.isEnabledFor(logging.INFO)`` first, so no string, dict or clock read is made when
INFO is off.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.jobs import ClaimedJob
from pipeline.logsetup import FIELDS

log = logging.getLogger("mediapipe.jobs")

STARTED = "started"
DONE = "done"


def started(job: ClaimedJob, worker: str) -> None:
    """``job`` starts on ``worker`` (call only when INFO is on)."""
    _line(STARTED, job, worker, None, None)


def ended(
    job: ClaimedJob, worker: str, event: str, duration: float | None, error: str | None = None
) -> None:
    """``job`` ended as ``event`` after ``duration`` seconds (None: not timed here, e.g.
    recorded after a reconnect); call only when INFO is on."""
    _line(event, job, worker, duration, error)


def _line(
    event: str, job: ClaimedJob, worker: str, duration: float | None, error: str | None
) -> None:
    fields: dict[str, Any] = {
        "event": event,
        "dag": job.dag_id,
        "job": job.id,
        "stage": job.stage,
        "queue": job.queue,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "duration_s": None if duration is None else round(duration, 3),
        "worker": worker,
    }
    took = "" if duration is None else f" duration={duration:.3f}s"
    text = (
        f"job {event} dag={job.dag_id} job={job.id} stage={job.stage} queue={job.queue} "
        f"attempt={job.attempt}/{job.max_attempts}{took} worker={worker}"
    )
    if error is not None:
        fields["error"] = error
        text += f" error={json.dumps(error)}"
    log.info(text, extra={FIELDS: fields})
