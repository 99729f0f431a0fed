"""The minimal runner: one process runs jobs one after another (claim -> run -> complete).

It exercises the whole state machine without the pool: for tests, for debugging a stage
in one process, and as the reference the worker node must behave like.

With ``prefetch > 1`` it claims several jobs per round trip and reports finished ones
together (at the next claim, or after ``flush_interval``): tiny jobs then cost a fraction
of a round trip each. A background thread keeps the leases of every held job alive, so a
long job is not reclaimed as stalled while this process lives. Prefetched jobs that were
never started are handed back when the runner stops.

A job whose DAG is cancelled, or whose lease another worker took, is stopped: the stage
function runs in this process and cannot be killed, so it is stopped at its next progress
report (``JobStopped``), and a held job not yet started is not started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pipeline.breaker import ServiceBreakers
from pipeline.broker import Broker, LeaseStatus
from pipeline.context import JobContext, JobStopped, current_job
from pipeline.jobs import ClaimedJob, RawJSON, encode_result
from pipeline.outage import REDIS_DOWN, SERVICE_GIVE_UP, Outage
from pipeline.registry import Registry
from workers import job_log
from workers.outcomes import Failure, record

log = logging.getLogger("mediapipe.inline")
_jobs = job_log.log
_INFO = logging.INFO
T = TypeVar("T")


class LeaseKeeper(threading.Thread):
    """Extends the leases of the held jobs every third of the lease, until stopped."""

    def __init__(self, broker: Broker, interval: float) -> None:
        super().__init__(daemon=True, name="lease-keeper")
        self.broker = broker
        self.interval = interval
        self.held: dict[str, str] = {}  # job id -> token
        # job id -> why it must stop: its DAG was cancelled, or its lease was lost
        self.stop_requested: dict[str, LeaseStatus] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def hold(self, jobs: Sequence[ClaimedJob]) -> None:
        with self._lock:
            for j in jobs:
                self.held[j.id] = j.token

    def drop(self, job: ClaimedJob) -> None:
        with self._lock:
            self.held.pop(job.id, None)
            self.stop_requested.pop(job.id, None)

    def swap(self, done: Sequence[tuple[ClaimedJob, Any]], taken: Sequence[ClaimedJob]) -> None:
        """``drop`` the finished jobs and ``hold`` the new ones under one lock (a busy
        runner does both once per job)."""
        with self._lock:
            held, stops = self.held, self.stop_requested
            if len(done) == 1 and not stops:  # a busy runner's one job a round trip
                held.pop(done[0][0].id, None)
            else:
                for j, _ in done:
                    held.pop(j.id, None)
                    if stops:
                        stops.pop(j.id, None)
            for j in taken:
                held[j.id] = j.token

    def stop_code(self, job_id: str) -> LeaseStatus | None:
        """CANCELLED or LOST once the job must stop; None while it may run."""
        return self.stop_requested.get(job_id)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            with self._lock:
                held = dict(self.held)
            if not held:
                continue
            try:
                codes = self.broker.extend(held)
            except REDIS_DOWN:  # the runner's own calls say so; the next tick retries
                continue
            except Exception:  # nothing may kill the keeper
                log.warning("lease extension failed", exc_info=True)
                continue
            with self._lock:
                for j, c in codes.items():
                    if c != LeaseStatus.OK and j in self.held:
                        self.stop_requested[j] = c

    def stop(self) -> None:
        self._stop_event.set()


class InlineRunner:
    def __init__(
        self,
        broker: Broker,
        queues: Sequence[str] = ("default",),
        *,
        registry: Registry | None = None,
        prefetch: int = 1,
        flush_interval: float = 0.05,
        idle_wait: float = 1.0,
        stall_check: float | None = None,
    ) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.registry = registry or broker.registry
        self.prefetch = max(1, prefetch)
        self.flush_interval = flush_interval
        self.idle_wait = idle_wait
        lease = broker.lease_ms / 1000
        self.stall_check = stall_check if stall_check is not None else lease / 2
        self.keeper = LeaseKeeper(broker, max(0.05, lease / 3))
        self.outage = Outage(default_give_up=SERVICE_GIVE_UP, notice=log.warning)
        self.breakers = ServiceBreakers(
            broker.redis, namespace=broker.keys.namespace, scripts=broker.scripts
        )
        self.processed = 0
        self._held: deque[ClaimedJob] = deque()
        self._done: list[tuple[ClaimedJob, Any]] = []
        self._first_done = 0.0
        self._started: dict[str, float] = {}  # job id -> start, kept only while INFO logs

    def run(self, stop: Callable[[], bool], *, max_jobs: int | None = None) -> int:
        """Run until ``stop()`` is true (checked between jobs) or ``max_jobs`` ran."""
        self.keeper.start()
        next_stall_check = 0.0
        limit = max_jobs if max_jobs is not None else float("inf")
        monotonic, held = time.monotonic, self._held
        try:
            while not stop() and self.processed < limit:
                now = monotonic()
                if now >= next_stall_check:
                    self._redis(self.broker.reclaim_stalled, self.queues)
                    next_stall_check = now + self.stall_check
                self._tick(now)
                if not held and not self._refill(now, next_stall_check):
                    continue
                self._run_held()
                # With nothing left held, the next turn's claim carries the results at once.
                if held and self._done and monotonic() - self._first_done >= self.flush_interval:
                    self._flush(fetch=False)
        finally:
            self._flush(fetch=False)
            if self._held:
                self._redis(self.broker.release, list(self._held))
                self._held.clear()
            self.keeper.stop()
        return self.processed

    def _redis(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, riding out a Redis outage: one line when it starts and
        one when it ends, retried with backoff meanwhile (``MEDIAPIPE_REDIS_GIVE_UP``:
        never by default). A transition repeated with the same arguments is a resend of
        the one whose reply was lost, so it runs once (see pipeline/scripts)."""
        return self.outage.call(fn, *args, **kwargs)

    def _tick(self, now: float) -> None:
        """Called once per loop turn, busy or idle (subclasses heartbeat here)."""

    def _run_held(self) -> None:
        self._run_one(self._held.popleft())

    def _refill(self, now: float, next_stall_check: float) -> bool:
        if self._done:
            self._flush(fetch=True)
        else:
            jobs, wake = self._redis(self.broker.claim, self.queues, self.prefetch)
            self._take(jobs)
            if not jobs:
                wait = self.idle_wait if wake < 0 else min(wake, self.idle_wait)
                timeout = min(wait, max(0.01, next_stall_check - now))
                self._redis(self.broker.wait_for_work, self.queues, timeout)
        return bool(self._held)

    def _take(self, jobs: list[ClaimedJob]) -> None:
        self.keeper.hold(jobs)
        self._held.extend(jobs)

    def _flush(self, *, fetch: bool) -> None:
        if not self._done and not fetch:
            return
        done, self._done = self._done, []
        # outage.call itself rather than _redis: one layer less on every job's path
        if fetch and len(done) == 1:  # a busy runner's call, once a job
            job, body = done[0]
            _, nxt = self.outage.call(
                self.broker.complete_next, job, body, self.queues, self.prefetch
            )
        else:
            _, nxt = self.outage.call(
                self.broker.complete_many,
                done,
                next_from=self.queues if fetch else (),
                count=self.prefetch,
            )
        self.keeper.swap(done, nxt)
        self._held.extend(nxt)

    def _run_one(self, job: ClaimedJob) -> None:
        code = self.keeper.stop_code(job.id)
        if code is not None:
            self._record_stopped(job, code)
            return
        logged = _jobs.isEnabledFor(_INFO)
        if logged:
            self._log_start(job)
        try:
            body = self.execute(job)
        except JobStopped:
            self._record_stopped(job, self.keeper.stop_code(job.id))
            return
        except Exception as exc:
            self._record_failure(job, exc)
            return
        self._record_done(job, body, logged)

    def _log_start(self, job: ClaimedJob) -> None:
        self._started[job.id] = time.monotonic()
        job_log.started(job, self.broker.worker_id)

    def _log_end(self, job: ClaimedJob, event: str | None, error: str | None = None) -> None:
        began = self._started.pop(job.id, None)
        took = None if began is None else time.monotonic() - began
        job_log.ended(job, self.broker.worker_id, event or "unrecorded", took, error)

    def _record_stopped(self, job: ClaimedJob, code: LeaseStatus | None) -> None:
        """A job stopped because its DAG was cancelled (it ends cancelled) or its lease was
        lost (nothing is reported: the lease's new owner decides)."""
        self.processed += 1
        self.keeper.drop(job)
        if code == LeaseStatus.LOST:
            log.warning("job %s: lease lost to another worker; stopped here", job.id)
            self._started.pop(job.id, None)
            return
        outcome = record(self.broker, job, Failure.cancelled(), call=self._redis)
        if _jobs.isEnabledFor(_INFO):
            self._log_end(job, outcome, "the DAG was cancelled")

    def _record_done(self, job: ClaimedJob, body: RawJSON, logged: bool | None = None) -> None:
        """Queue a result for the next completion (several go in one round trip).
        ``logged``: whether its start was logged (asked of the logger when not given)."""
        self.processed += 1
        if not self._done:
            self._first_done = time.monotonic()
        self._done.append((job, body))
        if logged if logged is not None else _jobs.isEnabledFor(_INFO):
            self._log_end(job, job_log.DONE)

    def _record_failure(self, job: ClaimedJob, exc: BaseException) -> None:
        """What the error's class decides, as the worker node does (workers/outcomes.py):
        retry or dead, or deferred without spending the attempt when a service is down."""
        self.processed += 1
        self.keeper.drop(job)
        service = job.params.get("service") if isinstance(job.params, dict) else None
        failure = Failure.of(exc)
        outcome = record(
            self.broker,
            job,
            failure,
            service=service,
            breakers=self.breakers,
            call=self._redis,
        )
        if _jobs.isEnabledFor(_INFO):
            self._log_end(job, outcome, f"{failure.error_type}: {failure.message}")

    def execute(self, job: ClaimedJob) -> RawJSON:
        spec = self.registry.get(job.stage)
        ctx = JobContext(job, self.broker, lambda: self.keeper.stop_code(job.id) is not None)
        # Encoded once here, where a bad result can still fail the job; the completion
        # sends this text as it is. What ``with running(ctx)`` does, without its three
        # method calls (~4,000 of a no-op job's ~100,000 worker instructions, callgrind).
        token = current_job.set(ctx)
        try:
            return encode_result(job.stage, spec.fn(ctx, job.params, job.inputs))
        finally:
            current_job.reset(token)
