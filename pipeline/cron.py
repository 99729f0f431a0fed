"""Cron and interval arithmetic for schedules: when is the next tick, which tick is due.

Cron expressions are evaluated by croniter in the schedule's time zone (zoneinfo); see
docs/schedules.md for what happens on the days clocks change. Everything here is pure
arithmetic on epoch seconds: no Redis, no clock of its own.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from pipeline.errors import SubmissionError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(text: str) -> int:
    """``90``, ``30s``, ``10m``, ``2h``, ``1d`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not m or int(m.group(1)) == 0:
        raise SubmissionError(f"--every {text!r}: expected a positive duration like 30s, 10m, 2h")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def time_zone(tz: str) -> ZoneInfo:
    """The IANA time zone ``tz``, or a SubmissionError naming it."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SubmissionError(
            f"unknown time zone {tz!r} (an IANA name, e.g. Europe/Paris)"
        ) from None


def _is_repeat(t: int, zone: ZoneInfo) -> bool:
    """True for the second occurrence of a wall-clock time in the hour repeated when clocks
    go back. fromtimestamp sets fold=1 exactly there; the offset check keeps a fold that
    makes no difference (not an ambiguous time) from counting."""
    d = datetime.fromtimestamp(t, zone)
    return d.fold == 1 and d.replace(fold=0).utcoffset() != d.utcoffset()


def cron_newest(expr: str, zone: ZoneInfo, after: float, now: float) -> int | None:
    """The newest tick of ``expr`` in (after, now], or None.

    O(1) however long the outage: we walk back from now instead of forward from ``after``.
    croniter's get_prev is strict, so start one second past now (ticks are whole seconds).
    """
    it = croniter(expr, datetime.fromtimestamp(math.floor(now) + 1, zone))
    while True:
        t = int(it.get_prev(datetime).timestamp())
        if t <= after:
            return None
        if not _is_repeat(t, zone):
            return t


def cron_next(expr: str, zone: ZoneInfo, after: float) -> int:
    """The first tick of ``expr`` strictly after ``after``."""
    it = croniter(expr, datetime.fromtimestamp(after, zone))
    while True:
        t = int(it.get_next(datetime).timestamp())
        if not _is_repeat(t, zone):
            return t


def interval_newest(created: int, every: int, after: float, now: float) -> int | None:
    """The newest tick in (after, now] of an interval counted from ``created``, or None.
    Interval ticks count real elapsed seconds from creation: no time zone, no DST."""
    if now < created + every:
        return None
    t = created + int((now - created) // every) * every
    return t if t > after else None


def interval_next(created: int, every: int, after: float) -> int:
    """The first tick of an interval counted from ``created`` strictly after ``after``."""
    if after < created:
        return created + every
    return created + (int((after - created) // every) + 1) * every
