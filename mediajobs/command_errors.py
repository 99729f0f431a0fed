"""What a command does with an error: one line on stderr and an exit code, no traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
import redis

from pipeline.connection import redacted
from pipeline.errors import ExitCode, RedisUnavailableError, SubmissionError

F = TypeVar("F", bound=Callable[..., Any])

# Set (to anything but 0) to get the traceback of an error no command expected.
ENV_DEBUG = "MEDIAPIPE_DEBUG"


def friendly_errors(fn: F) -> F:
    """One clear line on stderr and the right exit code instead of a traceback: BAD_INPUT
    for an input or option rejected, REDIS_UNAVAILABLE (its URL's secrets redacted) for a
    Redis unreachable or lost mid-command, FAILED for Redis refusing a command or an error
    nobody expected (its traceback with MEDIAPIPE_DEBUG=1)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RedisUnavailableError as exc:
            _line(str(exc))
            sys.exit(ExitCode.REDIS_UNAVAILABLE)
        except SubmissionError as exc:
            _line(str(exc))
            sys.exit(ExitCode.BAD_INPUT)
        except (redis.ConnectionError, redis.TimeoutError, ConnectionError) as exc:
            # Reachable when the command began (its client pinged), gone part-way.
            _line(f"Redis unreachable: {_first_line(exc)}")
            sys.exit(ExitCode.REDIS_UNAVAILABLE)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: a usage error the group prints as one line, ctx.exit()
        except redis.ResponseError as exc:
            _line(f"Redis refused the command: {_first_line(exc)}")
            sys.exit(ExitCode.FAILED)
        except Exception as exc:
            if os.environ.get(ENV_DEBUG, "0") not in ("", "0"):
                raise
            _line(f"{type(exc).__name__}: {_first_line(exc)} (set {ENV_DEBUG}=1 for the traceback)")
            sys.exit(ExitCode.FAILED)

    return wrapper  # type: ignore[return-value]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _line(message: str) -> None:
    click.echo(redacted(f"mediapipe: {' '.join(message.split())}"), err=True)
