"""What a stage function sees of the job it runs: progress reporting and fan-out.

The context knows nothing of Redis: it forwards to a ``Reporter``, which is the broker
in the inline runner and a pipe to the worker's parent process in the pool.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from pipeline.errors import ServiceUnavailableError
from pipeline.jobs import ClaimedJob
from pipeline.model import Dag


class Reporter(Protocol):
    def progress(
        self, job: ClaimedJob, percent: float, message: str = "", **fields: Any
    ) -> Any: ...

    def add_children(self, job: ClaimedJob, sub: Dag) -> int: ...


class JobContext:
    # Progress is throttled: a transcode reports many times a second, and every report
    # is a Redis write plus a stream entry.
    PROGRESS_INTERVAL = 0.25

    def __init__(self, job: ClaimedJob, reporter: Reporter) -> None:
        self.job = job
        self._reporter = reporter
        self._last_progress = 0.0

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    def progress(
        self, percent: float, message: str = "", *, force: bool = False, **fields: Any
    ) -> None:
        now = time.monotonic()
        if not force and percent < 100 and now - self._last_progress < self.PROGRESS_INTERVAL:
            return
        self._last_progress = now
        self._reporter.progress(self.job, max(0.0, min(100.0, percent)), message, **fields)

    def new_children(self) -> Dag:
        """A builder for jobs to add to this DAG at run time (see ``add_children``)."""
        return Dag(self.job.dag_id)

    def add_children(self, sub: Dag) -> int:
        return self._reporter.add_children(self.job, sub)

    def check_service(self, service: str) -> None:
        """Raise ServiceUnavailableError when the fleet's breaker for ``service`` is open, so
        a job that was admitted before an outage does not add to it."""
        check = getattr(self._reporter, "check_service", None)
        wait = float(check(self.job, service)) if check is not None else 0.0
        if wait > 0:
            raise ServiceUnavailableError(
                f"{service} is unavailable (circuit open)", retry_after=wait
            )
