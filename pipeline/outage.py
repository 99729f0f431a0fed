"""Riding out a Redis outage: retry with capped backoff, say so once, give up after a while.

A Redis restart (a crash replayed from its AOF, a failover, maintenance) takes seconds;
a client that dies on the first refused connection turns that blip into a lost command.
Long-lived clients (``submit --wait``, ``watch``, ``status``' reads, the dashboard, a
worker starting up) call Redis through an ``Outage``: the first failure prints one notice
line, the calls are retried with exponential backoff capped at ``max_delay``, recovery
prints one line, and after ``give_up`` seconds of continuous failure ``RedisGaveUpError``
(a ``RedisUnavailableError``: exit code 3 on the command line) is raised.

``MEDIAPIPE_REDIS_GIVE_UP`` sets the give-up time in seconds for every client (``never``
or ``inf``: retry for ever; ``0``: fail on the first error). Without it, commands give up
after ``CLIENT_GIVE_UP`` seconds and long-running services (workers, the dashboard) never.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from pipeline.errors import RedisUnavailableError

T = TypeVar("T")

ENV_GIVE_UP = "MEDIAPIPE_REDIS_GIVE_UP"
CLIENT_GIVE_UP = 60.0  # commands: submit --wait, watch, status
SERVICE_GIVE_UP = math.inf  # workers and the dashboard: an operator stops them

# BusyLoadingError (a server replaying its AOF) is a ConnectionError in redis-py; the
# builtin ConnectionError covers a socket refused before redis-py wrapped it.
REDIS_DOWN: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
)


class RedisGaveUpError(RedisUnavailableError):
    """Redis stayed unreachable for longer than the give-up time."""


def give_up_seconds(default: float) -> float:
    """The configured give-up time: ``MEDIAPIPE_REDIS_GIVE_UP``, else ``default``."""
    raw = os.environ.get(ENV_GIVE_UP, "").strip().lower()
    if not raw:
        return default
    if raw in ("never", "inf", "infinity", "none"):
        return math.inf
    try:
        value = float(raw)
    except ValueError:
        raise RedisUnavailableError(
            f"{ENV_GIVE_UP} must be a number of seconds or 'never', not {raw!r}"
        ) from None
    return max(0.0, value)


def describe(seconds: float) -> str:
    return "for ever" if math.isinf(seconds) else f"for up to {seconds:g}s"


def _stderr_line(line: str) -> None:
    sys.stderr.write(f"mediapipe: {line}\n")
    sys.stderr.flush()


class Outage:
    """Calls into Redis that survive an outage. One instance per client: it remembers
    when the current outage began, so a poll loop's many calls share one give-up clock
    and one notice. The backoff stops growing at ``max_delay``: a restarted server is
    noticed at most that late, and one failed connect every 2 s costs nothing."""

    def __init__(
        self,
        *,
        give_up: float | None = None,
        default_give_up: float = CLIENT_GIVE_UP,
        notice: Callable[[str], None] = _stderr_line,
        first_delay: float = 0.1,
        max_delay: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.give_up = give_up_seconds(default_give_up) if give_up is None else give_up
        self.notice = notice
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.down_since: float | None = None
        self._delay = first_delay

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried while Redis is unreachable; raises
        RedisGaveUpError after the give-up time."""
        while True:
            try:
                result = fn(*args, **kwargs)
            except REDIS_DOWN as exc:
                self.failed(exc)
                continue
            if self.down_since is not None:
                self.recovered()
            return result

    def failed(self, exc: BaseException) -> None:
        """Count one failed call: the notice on the first, then wait before the next try
        (or raise RedisGaveUpError once the give-up time has passed)."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            self._delay = self.first_delay
            if self.give_up > 0:  # with no time to retry, the give-up line is the only one
                self.notice(
                    f"Redis unreachable ({_reason(exc)}): retrying {describe(self.give_up)} "
                    f"({ENV_GIVE_UP})"
                )
        elapsed = now - self.down_since
        if elapsed >= self.give_up:
            message = f"Redis unreachable ({_reason(exc)}) for {elapsed:.0f}s: giving up ("
            message += f"{ENV_GIVE_UP}="
            message += f"{self.give_up:g})"
            self.down_since = None
            raise RedisGaveUpError(message) from None
        self.sleep(min(self._delay, max(0.01, self.give_up - elapsed)))
        self._delay = min(self._delay * 2, self.max_delay)

    def recovered(self) -> None:
        if self.down_since is not None:
            self.notice(f"Redis is back after {time.monotonic() - self.down_since:.1f}s")
            self.down_since = None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
