"""What happens to a job that raised or must stop, decided in one place.

The worker node (for its pool children), the inline runner and the batch lanes all turn
an exception into a ``Failure`` here and record it with ``record``. The error's class
decides, and the decision travels between processes as plain data, so a pool child's
failure means the same in its parent as it would in the process that raised it:

- ``PermanentError`` (bad input, unsupported media, a file where a folder must go):
  dead at once, into the DLQ;
- ``ThrottledError``: the whole queue is held back for ``retry_after``, the job deferred;
- ``ServiceUnavailableError``: the job is deferred without spending its attempt, and the
  service's fleet-wide breaker counts the failure;
- ``ServiceFailedError``: retried after its backoff like any error (then dead), and the
  service's breaker counts the failure;
- anything else, a timeout, a full disk or a crashed child included: retried after its
  backoff while attempts remain, then dead;
- a job whose DAG was cancelled ends cancelled; a job whose lease was lost is not
  recorded at all (the lease's new owner decides what happens to it).
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.breaker import BreakerPolicy, ServiceBreakers
from pipeline.broker import Broker
from pipeline.errors import (
    PermanentError,
    ServiceFailedError,
    ServiceUnavailableError,
    ThrottledError,
    disk_full,
    path_conflict,
)
from pipeline.jobs import ClaimedJob

RETRY = "retry"
DEAD = "dead"
DEFER = "defer"
THROTTLE = "throttle"
SERVICE_FAILED = "service_failed"  # a retry that the service's breaker also counts
ACTIONS = frozenset({RETRY, DEAD, DEFER, THROTTLE, SERVICE_FAILED})
CANCELLED = 2  # extend_lease's code for a job whose DAG was cancelled
LEASE_LOST = 0  # ... and for one whose lease another worker holds now


@dataclass(frozen=True)
class Failure:
    error_type: str
    message: str
    action: str = RETRY
    traceback: str = ""
    wait: float = -1.0  # defer/throttle: seconds until it may run; -1: the worker decides

    @classmethod
    def of(cls, exc: BaseException, tb: str | None = None) -> Failure:
        if tb is None:
            tb = "".join(traceback.format_exception(exc))
        # One line that says what to do, however deep the write failed: retry a full disk,
        # not a path in the way.
        exc = disk_full(exc) or path_conflict(exc) or exc
        action, wait = RETRY, -1.0
        if isinstance(exc, ServiceUnavailableError):
            action = THROTTLE if isinstance(exc, ThrottledError) else DEFER
            wait = exc.retry_after if exc.retry_after is not None else -1.0
        elif isinstance(exc, ServiceFailedError):
            action = SERVICE_FAILED
        elif isinstance(exc, PermanentError):
            action = DEAD
        return cls(type(exc).__name__, str(exc) or type(exc).__name__, action, tb, wait)

    @classmethod
    def cancelled(cls) -> Failure:
        return cls("Cancelled", "the DAG was cancelled", DEAD)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Failure:
        """A failure read from another process; anything but this exact shape is refused."""
        if not isinstance(data, dict) or set(data) != {
            "error_type",
            "message",
            "action",
            "traceback",
            "wait",
        }:
            raise ValueError(f"not a failure: {data!r:.200}")
        strings = (data["error_type"], data["message"], data["traceback"])
        wait = data["wait"]
        if (
            not all(isinstance(s, str) for s in strings)
            or data["action"] not in ACTIONS
            or not isinstance(wait, int | float)
            or isinstance(wait, bool)
            or not math.isfinite(wait)
        ):
            raise ValueError(f"not a failure: {data!r:.200}")
        return cls(data["error_type"], data["message"], data["action"], data["traceback"], wait)


def _direct(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def record(
    broker: Broker,
    job: ClaimedJob,
    failure: Failure,
    *,
    service: str | None = None,
    breakers: ServiceBreakers | None = None,
    policy: BreakerPolicy | None = None,
    call: Callable[..., Any] = _direct,
) -> str | None:
    """Record ``failure`` of ``job``: 'retry', 'dead', 'cancelled', 'discarded' (its lease
    was lost meanwhile) or 'deferred'. ``call`` runs each Redis call (the worker node's
    returns None while Redis is unreachable); None: not recorded, record it again later.
    """
    if failure.action in (DEFER, THROTTLE):
        wait = failure.wait
        if failure.action == THROTTLE and wait > 0:
            call(broker.throttle, job.queue, wait)
        state = call(breakers.outcome, service, False) if breakers and service else None
        if wait < 0:
            cooldown = (policy or BreakerPolicy()).cooldown
            wait = cooldown if state == "open" else job.backoff.delay(job.attempt)
        reason = f"{service or 'a service'} ({failure.message})"
        released = call(broker.release, [job], delay=max(wait, 0.05), reason=reason)
        return None if released is None else "deferred"
    if failure.action == SERVICE_FAILED and breakers and service:
        call(breakers.outcome, service, False)
    outcome: str | None = call(
        broker.fail_with,
        job,
        failure.error_type,
        failure.message,
        permanent=failure.action == DEAD,
        tb=failure.traceback,
    )
    return outcome
