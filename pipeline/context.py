"""What a stage function sees of the job it runs: progress reporting and fan-out.

The context knows nothing of Redis: it forwards to a ``Reporter``, which is the broker
in the inline runner and a pipe to the worker's parent process in the pool.

A runner that cannot kill the code it runs (the inline runner, a batch lane's one-by-one
path) passes ``stop_check``: once the job's DAG is cancelled or its lease is lost, the
next progress report raises ``JobStopped`` out of the stage.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from typing import Any, Protocol

from pipeline.errors import ServiceUnavailableError
from pipeline.jobs import ClaimedJob
from pipeline.model import Dag
from pipeline.routing import route_of


class Reporter(Protocol):
    def progress(
        self, job: ClaimedJob, percent: float, message: str = "", **fields: Any
    ) -> Any: ...

    def add_children(self, job: ClaimedJob, sub: Dag) -> int: ...


class JobStopped(BaseException):
    """The job must stop now: its DAG was cancelled or its lease went to another worker.

    A BaseException, like KeyboardInterrupt, so a stage's ``except Exception`` cannot
    swallow it and carry on."""


class JobContext:
    # Progress is throttled: a transcode reports many times a second, and every report
    # is a Redis write plus a stream entry.
    PROGRESS_INTERVAL = 0.25

    __slots__ = ("_last_progress", "_reporter", "_stop_check", "job")

    def __init__(
        self,
        job: ClaimedJob,
        reporter: Reporter,
        stop_check: Callable[[], bool] | None = None,
    ) -> None:
        self.job = job
        self._reporter = reporter
        self._last_progress = 0.0
        self._stop_check = stop_check

    @property
    def stop_requested(self) -> bool:
        return self._stop_check is not None and self._stop_check()

    def check_stop(self) -> None:
        """Raise JobStopped when the runner was told to stop this job."""
        if self.stop_requested:
            raise JobStopped(self.job.id)

    def temp_created(self, path: str) -> None:
        """A temporary output is about to be created: a runner that kills the job sweeps
        it (``stages.output`` calls this before the file exists)."""
        note = getattr(self._reporter, "temp_created", None)
        if note is not None:
            note(self.job, path)

    @property
    def tags(self) -> frozenset[str]:
        """The capabilities the job was routed for (``nvdec`` for a job claimed from
        ``default@nvdec``): the worker that claimed it holds every one of them."""
        return route_of(self.job.queue)[1]

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    def progress(
        self, percent: float, message: str = "", *, force: bool = False, **fields: Any
    ) -> None:
        self.check_stop()
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


# Set and reset by ``running``, or by a runner itself (workers/inline.py), where the
# context manager's three method calls cost a no-op job ~4,000 instructions.
current_job: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "mediapipe_job", default=None
)


def current() -> JobContext | None:
    """The job whose stage function runs here (None outside a job)."""
    return current_job.get()


class running:
    """``with running(ctx):`` marks ``ctx`` as the job running in this thread while a stage
    function runs, so output helpers name temporary files after the job and attempt.

    A class, not ``contextlib.contextmanager``: it wraps every job, and the generator
    version cost a no-op job 2 us more of client CPU (5 % of its whole cost)."""

    __slots__ = ("_ctx", "_token")

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx

    def __enter__(self) -> JobContext:
        self._token = current_job.set(self._ctx)
        return self._ctx

    def __exit__(self, *exc: object) -> None:
        current_job.reset(self._token)
