"""What a command does with an error it expects: one line on stderr and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from pipeline.connection import redacted
from pipeline.errors import RedisUnavailableError, SubmissionError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_REJECTED, EXIT_REDIS = 2, 3


def friendly_errors(fn: F) -> F:
    """One clear line on stderr and the right exit code instead of a traceback: 2 for an
    input or option rejected, 3 for Redis unreachable (its URL's secrets redacted)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RedisUnavailableError as exc:
            click.echo(redacted(f"mediapipe: {exc}"), err=True)
            sys.exit(EXIT_REDIS)
        except SubmissionError as exc:
            click.echo(f"mediapipe: {exc}", err=True)
            sys.exit(EXIT_REJECTED)

    return wrapper  # type: ignore[return-value]
