"""Batch lanes: one process that claims many jobs of one stage at once and runs them together.

A GPU worker renders images in batches: decoding 32 JPEGs in one nvJPEG call keeps the
device busy where one job at a time would leave it idle between round trips. The lane
claims up to ``size`` jobs in one atomic claim (the same claim transition, with a count),
hands them to the stage's batch function, and reports every outcome in one completion that
also claims the next batch. Each job keeps its own lease, result, retries and dead-letter
entry: a corrupt file fails alone.

A job the batch function declines (it returns None for it) or a batch that fails as a whole
(the device went away) runs through the ordinary stage function, one job at a time, in the
same process: nothing is lost and nothing waits for a GPU that is not there.

A guard thread watches whatever the lane runs (a batch, or one job on that path): past the
job timeout it fails them as timed out, and once every job in hand must stop (its DAG was
cancelled, its lease was lost) and has not stopped by itself within ``STOP_GRACE``, it
records them and ends the lane, removing their temporary outputs; the worker starts a new
lane. A hung device call cannot be interrupted from Python any other way.

The lane runs in its own process (CUDA state must not be forked into the CPU pool) and
registers itself as a worker serving its queue, so submitters route to it while it lives.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.broker import Broker, LeaseStatus
from pipeline.connection import connect
from pipeline.errors import JobTimeoutError, PermanentError
from pipeline.jobs import ClaimedJob, encode_result
from pipeline.logsetup import LogSettings, apply
from pipeline.registry import REGISTRY, BatchSpec, Registry
from pipeline.routing import routed_queue
from pipeline.worker_beat import WorkerBeat
from workers import job_log
from workers.inline import InlineRunner
from workers.outcomes import Failure, record

log = logging.getLogger("mediapipe.batch")

HEARTBEAT = 2.0
GUARD_POLL = 0.1  # how often the guard looks at the clock and the stop flags
STOP_GRACE = 1.0  # a job told to stop gets this long to stop by itself (JobStopped)
EXIT_TIMED_OUT, EXIT_STOPPED = 3, 4


class BatchRunner(InlineRunner):
    def __init__(
        self,
        broker: Broker,
        queues: Sequence[str],
        batch: BatchSpec,
        *,
        registry: Registry | None = None,
        tags: Sequence[str] = (),
        idle_wait: float = 1.0,
    ) -> None:
        # Results are reported when the next batch is claimed, in the same round trip.
        super().__init__(
            broker,
            queues,
            registry=registry,
            prefetch=batch.size,
            idle_wait=idle_wait,
            flush_interval=float("inf"),
        )
        self.batch = batch
        self.tags = list(tags)
        self.batches = 0
        self._next_heartbeat = 0.0

    def _tick(self, now: float) -> None:
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT
            beat = WorkerBeat(
                tags=tuple(self.tags),
                queues=tuple(self.queues),
                capacity=self.batch.size,
                in_use=len(self._held),
                jobs_done=self.processed,
                lane=f"batch:{self.batch.stage}",
            )
            # rides out an outage as the lane's other calls do
            self._redis(self.broker.heartbeat, 5 * HEARTBEAT, beat.fields())

    def _run_held(self) -> None:
        # A job leaves _held when it starts: a lane that ends early (_exit) hands back the
        # jobs of its claim it never started.
        jobs = list(self._held)
        batchable = [j for j in jobs if j.stage == self.batch.stage]
        for job in jobs:
            if job.stage != self.batch.stage:
                self._held.remove(job)
                self._run_one(job)  # another stage routed here: run it the ordinary way
        self._held.clear()
        if not batchable:
            return
        if job_log.log.isEnabledFor(logging.INFO):
            for job in batchable:
                self._log_start(job)
        try:
            with self._guarded(batchable):
                outcomes = self.batch.fn(batchable)
            if len(outcomes) != len(batchable):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(batchable)} jobs")
        except Exception:
            log.warning(
                "batch of %d %s jobs failed as a whole; running them one by one",
                len(batchable),
                self.batch.stage,
                exc_info=True,
            )
            outcomes = [None] * len(batchable)
        self.batches += 1
        one_by_one = []
        for job, outcome in zip(batchable, outcomes, strict=True):
            code = self.keeper.stop_code(job.id)
            if code is not None:
                self._record_stopped(job, code)  # finished, but no longer wanted
            elif outcome is None:
                one_by_one.append(job)
            elif isinstance(outcome, BaseException):
                self._record_failure(job, outcome)
            else:
                try:
                    body = encode_result(job.stage, outcome)
                except PermanentError as bad:
                    self._record_failure(job, bad)
                    continue
                self._record_done(job, body)
        if not one_by_one:
            return
        # What the batch finished is reported before the slower path starts: a job there
        # that times out ends the lane, and must not take its neighbours' results with it.
        self._flush(fetch=False)
        self._held.extend(one_by_one)
        while self._held:
            self._run_one(self._held.popleft())

    def _run_one(self, job: ClaimedJob) -> None:
        # The one-by-one path runs the stage function in this process: the guard enforces
        # the job's timeout, and stops it when it must stop and does not do so itself.
        with self._guarded([job]):
            super()._run_one(job)

    @contextlib.contextmanager
    def _guarded(self, jobs: list[ClaimedJob]) -> Iterator[None]:
        limits = [j.timeout for j in jobs]
        limit = max(limits) if all(t > 0 for t in limits) else 0.0  # 0: a job without one
        done = threading.Event()
        guard = threading.Thread(
            target=self._guard, args=(jobs, limit, done), daemon=True, name="lane-guard"
        )
        guard.start()
        try:
            yield
        finally:
            done.set()
            guard.join()

    def _guard(self, jobs: list[ClaimedJob], limit: float, done: threading.Event) -> None:
        deadline = time.monotonic() + limit if limit > 0 else float("inf")
        stop_seen = float("inf")
        while not done.wait(min(GUARD_POLL, max(0.0, deadline - time.monotonic()))):
            now = time.monotonic()
            if now >= deadline:
                self._timed_out(jobs, limit)
            codes = [self.keeper.stop_code(j.id) for j in jobs]
            if any(c is None for c in codes):
                stop_seen = float("inf")
            elif now - min(stop_seen, now) >= STOP_GRACE:
                self._stopped(jobs, codes)
            else:
                stop_seen = min(stop_seen, now)

    def _timed_out(self, jobs: list[ClaimedJob], limit: float) -> None:
        log.error(
            "%d %s jobs ran past %.0f s; failing them and restarting the lane",
            len(jobs),
            self.batch.stage,
            limit,
        )
        for job in jobs:
            try:
                late = JobTimeoutError(f"job ran past its timeout of {limit:g} s")
                outcome = record(self.broker, job, Failure.of(late, ""))
                if job_log.log.isEnabledFor(logging.INFO):
                    self._log_end(job, outcome, f"{JobTimeoutError.__name__}: {late}")
            except Exception:  # Redis down: the leases expire and the jobs are reclaimed
                log.warning("could not record the timeout of %s", job.id, exc_info=True)
        self._exit(EXIT_TIMED_OUT)

    def _stopped(self, jobs: list[ClaimedJob], codes: list[LeaseStatus | None]) -> None:
        log.warning(
            "%d %s jobs must stop (cancelled or lease lost); restarting the lane",
            len(jobs),
            self.batch.stage,
        )
        for job, code in zip(jobs, codes, strict=True):
            if code == LeaseStatus.CANCELLED:
                try:
                    outcome = record(self.broker, job, Failure.cancelled())
                    if job_log.log.isEnabledFor(logging.INFO):
                        self._log_end(job, outcome, "the DAG was cancelled")
                except Exception:  # Redis down: the lease expires; reclaim ends it cancelled
                    log.warning("could not record the cancel of %s", job.id, exc_info=True)
        self._exit(EXIT_STOPPED)

    def _exit(self, code: int) -> None:
        """End the lane now: the code in hand cannot be interrupted any other way. Results
        already made are reported first, jobs of the claim not yet started are handed
        back, unfinished temporary outputs are removed."""
        with contextlib.suppress(Exception):
            self._flush(fetch=False)
        with contextlib.suppress(Exception):  # Redis down: their leases expire instead
            self.broker.release(list(self._held))
        from stages.output import remove_live_temps

        remove_live_temps()
        os._exit(code)


def lane_main(
    url: str,
    namespace: str,
    stage: str,
    queue: str,
    tags: list[str],
    modules: list[str],
    lease: float = 30.0,
    log_settings: LogSettings | None = None,
) -> None:
    """Entry point of a lane process: serve ``queue`` with ``stage``'s batch function until
    SIGTERM, then finish the batch in hand and hand back what was not started. A spawned
    process starts with logging unset: ``log_settings`` are the worker's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when lanes stop
    if log_settings is not None:
        apply(log_settings)
    stopping = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    for module in modules:
        importlib.import_module(module)
    spec = next(b for b in REGISTRY.batches() if b.stage == stage)
    broker = Broker(
        connect(url, namespace=namespace), namespace=namespace, lease=lease, registry=REGISTRY
    )
    runner = BatchRunner(broker, [queue], spec, registry=REGISTRY, tags=tags)
    log.info("batch lane for %s on %s (up to %d jobs per claim)", stage, queue, spec.size)
    try:
        runner.run(lambda: stopping)
    finally:
        broker.heartbeat(0, {})  # deregister: routing stops sending work here


@dataclass(frozen=True)
class Lane:
    stage: str
    queue: str  # the routed queue it alone serves, e.g. default@nvjpeg


def lanes_for(
    queues: Sequence[str], tags: Sequence[str], registry: Registry = REGISTRY
) -> list[Lane]:
    """The batch lanes a box can run: its tags cover what the batch needs, and it serves the
    stage's queue."""
    out = []
    for spec in registry.batches():
        base = registry.get(spec.stage).queue
        if base in queues and set(spec.needs) <= set(tags):
            out.append(Lane(spec.stage, routed_queue(base, spec.needs)))
    return out


class LaneSupervisor:
    """Runs one process per lane beside the worker node and starts a lane again when it
    dies (a driver crash must not leave routed jobs to wait for the registry to expire).

    Lanes are spawned, not forked: a lane initialises CUDA, which a fork must not inherit.
    """

    RESTART_DELAY = 5.0

    def __init__(
        self,
        url: str,
        namespace: str,
        lanes: Sequence[Lane],
        tags: Sequence[str],
        modules: Sequence[str],
        lease: float = 30.0,
    ) -> None:
        self._args = (url, namespace, list(tags), list(modules), lease)
        self._log = LogSettings.current()
        self.lanes = list(lanes)
        self.procs: dict[Lane, Any] = {}
        self.restarts = 0
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    def start(self) -> None:
        if not self.lanes:
            return
        for lane in self.lanes:
            self._spawn(lane)
        self._watch = threading.Thread(target=self._watchdog, daemon=True, name="lanes")
        self._watch.start()

    def _spawn(self, lane: Lane) -> None:
        url, namespace, tags, modules, lease = self._args
        proc = multiprocessing.get_context("spawn").Process(
            target=lane_main,
            args=(url, namespace, lane.stage, lane.queue, tags, modules, lease, self._log),
            name=f"mediapipe-lane-{lane.stage}",
        )
        proc.start()
        self.procs[lane] = proc

    def _watchdog(self) -> None:
        while not self._stop.wait(self.RESTART_DELAY):
            for lane, proc in list(self.procs.items()):
                if not proc.is_alive() and not self._stop.is_set():
                    log.warning(
                        "batch lane for %s exited (code %s); starting it again",
                        lane.stage,
                        proc.exitcode,
                    )
                    self.restarts += 1
                    self._spawn(lane)

    def stop(self, grace: float) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join()
        procs = list(self.procs.values())
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: finish the batch in hand, hand back the rest
        for proc in procs:
            proc.join(grace)
            if proc.is_alive():
                proc.kill()
