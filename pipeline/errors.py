"""The error hierarchy: the class of an exception decides what happens to a job next.

- ``RetryableError``: the job goes back to the queue after its backoff, while attempts remain.
- ``PermanentError``: retrying cannot help; the job goes straight to the dead-letter queue.
- ``BadInputError``: a permanent error caused by the input itself (corrupt media, a bad
  submission); the CLI maps it to ``ExitCode.BAD_INPUT``.

Any other exception raised by a stage counts as retryable: a bug or a transient fault
is more often fixed by a retry than a misclassified permanent error is.
"""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    """What a ``mediapipe`` command (or a worker node's process) exits with."""

    OK = 0
    FAILED = 1  # a DAG failed while processing, or the command's work did not finish
    BAD_INPUT = 2  # an input, option or preset was rejected before anything was queued
    REDIS_UNAVAILABLE = 3  # Redis unreachable (for longer than the command waits)
    INTERRUPTED = 130  # Ctrl-C: this run's DAGs were cancelled (128 + SIGINT)


class MediapipeError(Exception):
    """Base class of every error mediapipe raises on purpose."""


class RetryableError(MediapipeError):
    """A failure that may succeed on another attempt (timeout, crash, service down)."""


class PermanentError(MediapipeError):
    """A failure that no retry can fix; the job goes to the dead-letter queue at once."""


class BadInputError(PermanentError):
    """The input is wrong: unsupported or corrupt media, or an invalid submission."""


class SubmissionError(BadInputError):
    """A DAG was rejected before anything was written to Redis."""


class ServiceUnavailableError(RetryableError):
    """An external service (object storage) is down, timing out or throttling us.

    The job is deferred, not failed: it goes back to the queue for ``retry_after`` seconds
    without spending an attempt, and the service's circuit breaker counts the failure.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceFailedError(RetryableError):
    """An external service failed this call and may not next time (a webhook receiver
    answering 5xx, refusing the connection, timing out). Unlike ServiceUnavailableError
    the attempt is spent: the job retries after its backoff and ends in the dead-letter
    queue when the service stays down. The service's breaker counts the failure, so
    other jobs for it wait out the cool-down instead of each spending attempts."""


class ThrottledError(ServiceUnavailableError):
    """The service said "too many requests, come back in N seconds" (HTTP 429): the whole
    queue is held back that long, not only this job."""


class JobTimeoutError(RetryableError):
    """A job ran past its timeout and was stopped."""


class DiskFullError(RetryableError):
    """The disk or the quota ran out while a job wrote (ENOSPC, EDQUOT). Retryable: space
    may be freed, and another worker may have room."""


# What a full disk or an exhausted quota says when written to.
_DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def disk_full(exc: BaseException, path: object = None) -> DiskFullError | None:
    """A one-line DiskFullError for an OSError that says the disk or quota is full (naming
    ``path``, or the file the error names), else None."""
    if isinstance(exc, DiskFullError):
        return exc
    if not isinstance(exc, OSError) or exc.errno not in _DISK_FULL:
        return None
    where = path if path is not None else exc.filename
    what = _DISK_FULL[exc.errno]
    return DiskFullError(f"{what} writing {where}" if where is not None else what)


class PathConflictError(PermanentError):
    """A file stands where a folder must go, or a folder where a file must (EEXIST,
    ENOTDIR, EISDIR: ``--out`` naming a file, say). Permanent: every retry would meet the
    same path, so the job goes to the dead-letter queue at once instead of three times."""


# Errors about the shape of the file system, not a passing state of it.
_PATH_CONFLICTS = (FileExistsError, NotADirectoryError, IsADirectoryError)


def path_conflict(exc: BaseException) -> PathConflictError | None:
    """A one-line PathConflictError for an OSError that says a path is in the way (naming
    the path), else None."""
    if isinstance(exc, PathConflictError):
        return exc
    if not isinstance(exc, _PATH_CONFLICTS):
        return None
    what = exc.strerror or type(exc).__name__
    where = f": {exc.filename}" if exc.filename is not None else ""
    return PathConflictError(f"{what}{where} (a file or folder is in the way; not retried)")


class RedisUnavailableError(MediapipeError):
    """Redis could not be reached (``ExitCode.REDIS_UNAVAILABLE``)."""


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, PermanentError)
