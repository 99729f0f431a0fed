"""The worker's side of the state machine: claim, extend, report, complete, fail.

Every method is one Lua script call (one round trip); ``complete`` can claim the next job
in the same call, so a busy worker pays one round trip per job.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import traceback
import uuid
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

import redis

from pipeline.errors import PermanentError, disk_full
from pipeline.jobs import ClaimedJob, RawJSON
from pipeline.jsontext import dumps_strict
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.registry import REGISTRY, Registry
from pipeline.scripts import REQUEST_ID, SLOT, Prepared, Scripts
from pipeline.submission import encode_nodes

log = logging.getLogger("mediapipe.broker")

DEFAULT_LEASE = 30.0


class LeaseStatus(IntEnum):
    """What ``extend_lease`` says of one job (the codes its script returns)."""

    LOST = 0  # reclaimed or finished elsewhere: stop it and discard its result
    OK = 1  # extended: keep running
    CANCELLED = 2  # extended, but its DAG was cancelled: stop it, it ends cancelled


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Broker:
    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str = "mp",
        worker_id: str | None = None,
        lease: float = DEFAULT_LEASE,
        registry: Registry = REGISTRY,
    ) -> None:
        self.redis = client
        self.keys = Keys(namespace)
        self._prefix = self.keys.prefix  # built once: _run is on every job's path
        self.scripts = Scripts(client)
        self.worker_id = worker_id or new_worker_id()
        self.lease_ms = int(lease * 1000)
        self.registry = registry
        self._next_calls: dict[tuple[tuple[str, ...], int], Prepared] = {}

    def _run(self, name: str, *args: Any) -> Any:
        return self.scripts.run(name, self._prefix, *args)

    # -- claiming -------------------------------------------------------------
    def claim(self, queues: Sequence[str], count: int = 1) -> tuple[list[ClaimedJob], float]:
        """Up to ``count`` jobs, and when there are none, how many seconds until one may
        fall due (a delayed job or a rate-limit window; -1: nothing scheduled)."""
        reply = self._run("claim", self.worker_id, REQUEST_ID, self.lease_ms, count, *queues)
        return self._parse_claim(reply)

    @staticmethod
    def _parse_claim(reply: Any, at: int = 0) -> tuple[list[ClaimedJob], float]:
        """A claim's flat reply from ``reply[at]``: the wake time, then the jobs."""
        wake: int = reply[at]  # an integer reply, like every count in it
        if len(reply) == at + 1:
            return [], (wake / 1000 if wake >= 0 else -1.0)
        jobs: list[ClaimedJob] = []
        i, end = at + 1, len(reply)
        while i < end:
            job, i = ClaimedJob.from_flat(reply, i)
            jobs.append(job)
        return jobs, -1.0

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        """Block on the queues' markers until work may be there (no polling)."""
        if timeout <= 0:
            return True
        markers = [self.keys.marker(q) for q in queues]
        return self.redis.blpop(markers, timeout=max(timeout, 0.01)) is not None

    # -- while running --------------------------------------------------------
    def extend(self, jobs: Mapping[str, str]) -> dict[str, LeaseStatus]:
        """Extend leases of {job id: token}; what became of each."""
        if not jobs:
            return {}
        args: list[Any] = [self.lease_ms]
        for jid, token in jobs.items():
            args += [jid, token]
        codes = self._run("extend_lease", *args)
        return {jid: LeaseStatus(int(c)) for jid, c in zip(jobs, codes, strict=True)}

    def progress(self, job: ClaimedJob, percent: float, message: str = "", **fields: Any) -> bool:
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v if isinstance(v, str | int | float) else json.dumps(v)]
        return bool(
            self._run("report_progress", job.id, job.token, round(percent, 2), message, *flat)
        )

    def add_children(self, job: ClaimedJob, sub: Dag) -> int:
        """Fan out from a running job; its parents then wait for the new jobs too."""
        if sub.id != job.dag_id:
            raise ValueError("children must be built with ctx.new_children()")
        payload = encode_nodes(sub, self.registry)
        try:
            return int(self._run("add_children", job.id, job.token, payload))
        except redis.ResponseError as exc:
            # Refused as a whole (nothing added): the same call would be refused again.
            raise PermanentError(str(exc)) from exc

    # -- finishing ------------------------------------------------------------
    def complete(
        self, job: ClaimedJob, result: Any, *, next_from: Sequence[str] = (), count: int = 1
    ) -> tuple[bool, list[ClaimedJob]]:
        """Record one result; returns (accepted, next jobs when ``next_from`` is given)."""
        statuses, nxt = self.complete_many([(job, result)], next_from=next_from, count=count)
        return statuses[0], nxt

    def complete_many(
        self,
        done: Sequence[tuple[ClaimedJob, Any]],
        *,
        next_from: Sequence[str] = (),
        count: int = 1,
    ) -> tuple[list[bool], list[ClaimedJob]]:
        """Record several results in one round trip and optionally claim up to ``count``
        next jobs. A result is discarded (False) when its lease was lost."""
        n = len(done)
        args: list[Any] = [n]
        for job, result in done:
            body = result if isinstance(result, RawJSON) else dumps_strict(result)
            args += (job.id, job.token, body)
        if next_from:
            args += (self.worker_id, REQUEST_ID, self.lease_ms, count, *next_from)
        else:
            args += ("", "", 0, 0)
        reply = self.scripts.run("complete", self._prefix, *args)
        # reply: n, n statuses, then the claim's reply when it claimed
        # (one result a call, a busy worker's case, without a comprehension's frame)
        accepted = [reply[1] == 1] if n == 1 else [s == 1 for s in reply[1 : 1 + n]]
        if not all(accepted):
            for (job, _), ok in zip(done, accepted, strict=True):
                if not ok:
                    log.warning(
                        "discarded completion of %s: its lease was lost (reclaimed elsewhere)",
                        job.id,
                    )
        return accepted, self._parse_claim(reply, 1 + n)[0] if len(reply) > 1 + n else []

    def complete_next(
        self, job: ClaimedJob, result: Any, next_from: Sequence[str], count: int = 1
    ) -> tuple[bool, list[ClaimedJob]]:
        """``complete_many([(job, result)], next_from=next_from, count=count)``, a busy
        worker's one call a job, sent as a prepared call (``Scripts.prepare``): the same
        transition, arguments, request ids and reply."""
        shape = (tuple(next_from), count)
        call = self._next_calls.get(shape)
        if call is None:
            call = self._next_calls[shape] = self.scripts.prepare(
                "complete", self._prefix, 1, SLOT, SLOT, SLOT,
                self.worker_id, REQUEST_ID, self.lease_ms, count, *shape[0],
            )  # fmt: skip
        body = result if isinstance(result, RawJSON) else dumps_strict(result)
        reply = self.scripts.run_prepared(call, job.id, job.token, body)
        accepted = reply[1] == 1
        if not accepted:
            log.warning(
                "discarded completion of %s: its lease was lost (reclaimed elsewhere)", job.id
            )
        return accepted, self._parse_claim(reply, 2)[0] if len(reply) > 2 else []

    def fail(self, job: ClaimedJob, exc: BaseException, *, tb: str | None = None) -> str:
        """Record a failure: 'retry', 'dead', 'cancelled' or 'discarded'."""
        exc = disk_full(exc) or exc
        return self.fail_with(
            job,
            type(exc).__name__,
            str(exc) or type(exc).__name__,
            permanent=isinstance(exc, PermanentError),
            tb=tb if tb is not None else "".join(traceback.format_exception(exc)),
        )

    def fail_with(
        self, job: ClaimedJob, error_type: str, message: str, *, permanent: bool, tb: str = ""
    ) -> str:
        """``fail`` for an error that happened elsewhere (a pool child) and arrives as data."""
        delay = 0.0 if permanent else job.backoff.delay(job.attempt)
        err = json.dumps(
            {
                "type": error_type,
                "message": message,
                "permanent": permanent,
                "traceback": tb,
                "worker": self.worker_id,
                "attempt": job.attempt,
            }
        )
        outcome = self._run(
            "fail", job.id, job.token, err, int(delay * 1000), "1" if permanent else "0"
        )
        return outcome.decode() if isinstance(outcome, bytes) else str(outcome)

    def release(self, jobs: Sequence[ClaimedJob], *, delay: float = 0.0, reason: str = "") -> int:
        """Hand claimed jobs back without spending an attempt: now, or after ``delay``
        seconds when they wait for something (``reason``, shown in the DAG)."""
        if not jobs:
            return 0
        args: list[Any] = [int(delay * 1000), reason]
        for job in jobs:
            args += [job.id, job.token]
        return int(self._run("release_jobs", *args))

    def reroute_orphans(self, queue: str, limit: int = 100) -> int:
        """Move waiting jobs with a fallback out of a queue no live worker serves."""
        return int(self._run("reroute_orphans", queue, limit))

    def throttle(self, queue: str, seconds: float) -> None:
        """Hold the whole queue back: nobody claims from it for ``seconds``."""
        self._run("throttle_queue", queue, int(seconds * 1000))

    # -- housekeeping ---------------------------------------------------------
    def heartbeat(self, ttl: float, fields: Mapping[str, Any]) -> int:
        """Register (or refresh) this worker in the fleet registry; ttl 0 deregisters."""
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v if isinstance(v, str | int | float) else json.dumps(v)]
        return int(self._run("worker_heartbeat", self.worker_id, int(ttl * 1000), *flat))

    def reclaim_stalled(self, queues: Sequence[str], limit: int = 100) -> list[str]:
        ids = self._run("reclaim_stalled", limit, *queues)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
