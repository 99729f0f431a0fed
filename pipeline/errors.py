"""The error hierarchy: the class of an exception decides what happens to a job next.

- ``RetryableError``: the job goes back to the queue after its backoff, while attempts remain.
- ``PermanentError``: retrying cannot help; the job goes straight to the dead-letter queue.
- ``BadInputError``: a permanent error caused by the input itself (corrupt media, a bad
  submission); the CLI maps it to exit code 2.

Any other exception raised by a stage counts as retryable: a bug or a transient fault
is more often fixed by a retry than a misclassified permanent error is.
"""

from __future__ import annotations


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


class ThrottledError(ServiceUnavailableError):
    """The service said "too many requests, come back in N seconds" (HTTP 429): the whole
    queue is held back that long, not only this job."""


class JobTimeoutError(RetryableError):
    """A job ran past its timeout and was stopped."""


class RedisUnavailableError(MediapipeError):
    """Redis could not be reached (CLI exit code 3)."""


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, PermanentError)
