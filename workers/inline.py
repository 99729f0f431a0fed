"""The minimal runner: one process, one job at a time (claim -> run -> complete/fail).

It exercises the whole state machine without the pool, for tests, for debugging a stage
in a single process, and as the reference the worker node must behave like. A background
thread keeps the current job's lease alive, so a long job is not reclaimed as stalled.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.broker import Broker
from pipeline.context import JobContext
from pipeline.errors import PermanentError
from pipeline.jobs import ClaimedJob
from pipeline.registry import Registry

log = logging.getLogger("mediapipe.inline")


class _LeaseKeeper(threading.Thread):
    """Extends the current job's lease every third of the lease, until told to stop."""

    def __init__(self, broker: Broker, interval: float) -> None:
        super().__init__(daemon=True, name="lease-keeper")
        self.broker = broker
        self.interval = interval
        self.current: ClaimedJob | None = None
        self.cancelled = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            job = self.current
            if job is None:
                continue
            try:
                codes = self.broker.extend({job.id: job.token})
            except Exception:  # a Redis blip must not kill the keeper
                log.warning("lease extension failed", exc_info=True)
                continue
            if codes.get(job.id) in (0, 2):
                self.cancelled.set()

    def stop(self) -> None:
        self._stop_event.set()


class InlineRunner:
    def __init__(self, broker: Broker, queues: Sequence[str] = ("default",), *,
                 registry: Registry | None = None, idle_wait: float = 1.0,
                 stall_check: float | None = None) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.registry = registry or broker.registry
        self.idle_wait = idle_wait
        lease = broker.lease_ms / 1000
        self.stall_check = stall_check if stall_check is not None else lease / 2
        self._keeper = _LeaseKeeper(broker, max(0.05, lease / 3))
        self.processed = 0

    def run(self, stop: Callable[[], bool], *, max_jobs: int | None = None) -> int:
        """Run until ``stop()`` is true (checked between jobs) or ``max_jobs`` ran."""
        self._keeper.start()
        next_stall_check = 0.0
        job: ClaimedJob | None = None
        try:
            while not stop() and (max_jobs is None or self.processed < max_jobs):
                now = time.monotonic()
                if now >= next_stall_check:
                    self.broker.reclaim_stalled(self.queues)
                    next_stall_check = now + self.stall_check
                if job is None:
                    job, wake = self.broker.claim(self.queues)
                    if job is None:
                        wait = self.idle_wait if wake < 0 else min(wake, self.idle_wait)
                        self.broker.wait_for_work(self.queues, min(wait, self.stall_check))
                        continue
                job = self._process(job, fetch_next=not stop())
        finally:
            self._keeper.stop()
        return self.processed

    def _process(self, job: ClaimedJob, *, fetch_next: bool) -> ClaimedJob | None:
        self._keeper.cancelled.clear()
        self._keeper.current = job
        try:
            result = self.execute(job)
        except BaseException as exc:
            self._keeper.current = None
            if not isinstance(exc, Exception):
                raise
            self.processed += 1
            outcome = self.broker.fail(job, exc, tb=traceback.format_exc())
            log.info("job %s failed (%s): %s", job.id, outcome, exc)
            return None
        self._keeper.current = None
        self.processed += 1
        _, nxt = self.broker.complete(job, result, next_from=self.queues if fetch_next else ())
        return nxt

    def execute(self, job: ClaimedJob) -> Any:
        spec = self.registry.get(job.stage)
        ctx = JobContext(job, self.broker)
        result = spec.fn(ctx, job.params, job.inputs)
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"stage {job.stage!r} returned a non-JSON result: {exc}") from None
        return result
