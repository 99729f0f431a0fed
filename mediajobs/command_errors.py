"""What a command does with an error it expects: one line on stderr and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from pipeline.connection import redacted
from pipeline.errors import ExitCode, RedisUnavailableError, SubmissionError

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """One clear line on stderr and the right exit code instead of a traceback: BAD_INPUT
    for an input or option rejected, REDIS_UNAVAILABLE (its URL's secrets redacted)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RedisUnavailableError as exc:
            click.echo(redacted(f"mediapipe: {exc}"), err=True)
            sys.exit(ExitCode.REDIS_UNAVAILABLE)
        except SubmissionError as exc:
            click.echo(f"mediapipe: {exc}", err=True)
            sys.exit(ExitCode.BAD_INPUT)

    return wrapper  # type: ignore[return-value]
