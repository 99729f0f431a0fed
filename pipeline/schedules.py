"""Scheduled and repeatable DAGs, as stored: the model and its Redis store.

A schedule is JSON in the hash ``{ns}:schedules`` (name -> schedule). Next to it,
``{ns}:schedule:<name>:last`` holds the newest tick already taken (epoch seconds) and
``{ns}:schedule:<name>:seen`` the identity of every input a watching schedule has handled
(a file's sha256; an object's, mediajobs/s3_watch.py; key names in pipeline/keys.py). A
watched path is a glob, a folder or an ``s3://bucket/prefix/``.

Any number of schedulers may run (one in each worker node, say): each computes the
newest due tick of every schedule and tries to take it with the ``claim_tick`` script, a
compare-and-set on the ``last`` key. One caller wins a tick; the others see it taken.
Ticks missed while no scheduler ran collapse into the newest one, which fires once on
recovery (misfire policy ``once``) or not at all (``skip``): never a burst.

The arithmetic of ticks is in pipeline/cron.py; firing a tick (probing the inputs,
submitting their DAGs) is the application's, in mediajobs/schedule_firing.py.

    Schedules(client).add("drop", "/srv/drop/*.jpg", every=60, preset="image")
"""

from __future__ import annotations

import glob
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterBadCronError, CroniterBadDateError

from pipeline.client import Client
from pipeline.clock import redis_clock
from pipeline.cron import cron_newest, cron_next, interval_newest, interval_next, time_zone
from pipeline.errors import SubmissionError
from pipeline.replies import as_str
from pipeline.webhooks import check_url

Clock = Callable[[], float]
# A preset as given -> the form to store (a file made absolute); raises SubmissionError
# for one that does not load.
PresetCheck = Callable[[str], str]

MISFIRE_POLICIES = ("once", "skip")
# Names become part of Redis keys, so keep them to characters that need no escaping.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Schedule:
    """One schedule as stored (JSON). Paths are absolute: any node may fire it."""

    name: str
    path: str  # absolute, or s3://bucket/key (an object) or s3://bucket/prefix/ (watched)
    preset: str = "auto"
    out: str = "mediapipe-out"
    cron: str | None = None
    every: int | None = None  # seconds; exclusive with cron
    tz: str = "UTC"
    priority: int = 0
    misfire: str = "once"  # once | skip, for a tick found more than `grace` seconds late
    grace: float = 60.0
    settle: float = 5.0  # watched files younger than this may still be being written
    watch: bool = False  # a glob or a folder: each content is submitted once
    paused: bool = False
    created: int = 0
    id: str = ""  # a new one on every add, so a stale reader cannot fire a re-added schedule
    webhook: str | None = None  # where each submitted DAG's end is announced

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Schedule:
        data = json.loads(raw)
        known = {f.name for f in fields(cls)}
        # Fields a newer version added are ignored, so versions can share one Redis.
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def zone(self) -> ZoneInfo:
        return time_zone(self.tz)

    @property
    def when(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron!r} {self.tz}"
        return f"every {self.every}s"

    def newest_due(self, after: float, now: float) -> int | None:
        """The newest tick in (after, now]; ticks before it were missed and collapse into it."""
        if self.cron is not None:
            return cron_newest(self.cron, self.zone, after, now)
        return interval_newest(self.created, int(self.every or 0), after, now)

    def next_after(self, after: float) -> int:
        if self.cron is not None:
            return cron_next(self.cron, self.zone, after)
        return interval_next(self.created, int(self.every or 0), after)


class Schedules:
    """Add, read, pause, resume and remove schedules."""

    def __init__(
        self, client: Client, *, clock: Clock | None = None, check_preset: PresetCheck | None = None
    ) -> None:
        """``clock``: epoch seconds; Redis' ``TIME`` unless given, so that the creation
        stamps written here and the ticks every scheduler computes share one clock.
        ``check_preset``: the application's check of a new schedule's preset (the engine
        knows no presets); without it the preset is stored as given."""
        self.client = client
        self._check_preset = check_preset
        self.redis = client.redis
        self._clock = clock or redis_clock(client.redis)
        self.keys = client.keys

    # Key names, as claim_tick.lua builds them (pipeline/keys.py).
    @property
    def key(self) -> str:
        return self.keys.schedules

    def last_key(self, name: str) -> str:
        return self.keys.schedule_last(name)

    def seen_key(self, name: str) -> str:
        return self.keys.schedule_seen(name)

    def now(self) -> float:
        """Epoch seconds on the schedules' clock."""
        return self._clock()

    def add(
        self,
        name: str,
        path: str,
        *,
        cron: str | None = None,
        every: int | None = None,
        tz: str = "UTC",
        preset: str = "auto",
        out: str = "mediapipe-out",
        priority: int = 0,
        misfire: str = "once",
        grace: float = 60.0,
        settle: float = 5.0,
        webhook: str | None = None,
    ) -> Schedule:
        if not _NAME.match(name):
            raise SubmissionError(f"schedule name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
        if (cron is None) == (every is None):
            raise SubmissionError("give exactly one of --cron and --every")
        tz_zone = time_zone(tz)
        now = int(self.now())
        if cron is not None:
            cron = " ".join(cron.split())
            # Five fields (or @daily and friends): minute resolution, as every cron user expects.
            if not (cron.startswith("@") or len(cron.split()) == 5) or cron == "@reboot":
                raise SubmissionError(f"--cron {cron!r}: expected five fields, e.g. '*/15 * * * *'")
            try:
                cron_next(cron, tz_zone, now)
            except (CroniterBadCronError, CroniterBadDateError, ValueError) as exc:
                raise SubmissionError(f"--cron {cron!r}: {exc}") from None
        if every is not None and every < 1:
            raise SubmissionError("--every must be at least one second")
        if misfire not in MISFIRE_POLICIES:
            raise SubmissionError(f"--misfire must be one of {', '.join(MISFIRE_POLICIES)}")
        if grace < 0 or settle < 0:
            raise SubmissionError("--grace and --settle must not be negative")
        if not -1000 <= priority <= 1000:
            raise SubmissionError("--priority must be within -1000..1000")
        if self._check_preset is not None:
            preset = self._check_preset(preset)  # fail now, not at 2 a.m. on the first tick
        if webhook is not None:
            check_url(webhook)
        if path.startswith("s3://"):
            # An object store's prefix (``s3://bucket/prefix/``) is watched as a folder is,
            # an object on its own runs again on every tick; the application fires them.
            bucket, _, key = path[5:].partition("/")
            if not bucket or any(c in path for c in "*?["):
                raise SubmissionError(f"{path!r}: expected s3://bucket/prefix/ (no globs)")
            full, watch = path, path.endswith("/") or not key
        else:
            full = os.path.abspath(os.path.expanduser(path))
            watch = glob.has_magic(full) or os.path.isdir(full)
        spec = Schedule(
            name=name,
            path=full,
            preset=preset,
            out=out if out.startswith("s3://") else os.path.abspath(out),
            cron=cron,
            every=every,
            tz=tz,
            priority=priority,
            misfire=misfire,
            grace=float(grace),
            settle=float(settle),
            watch=watch,
            created=now,
            id=uuid.uuid4().hex[:16],
            webhook=webhook,
        )

        def txn(pipe: Any) -> None:
            # Checked under WATCH: of two concurrent adds of one name, one fails.
            if pipe.hexists(self.key, name):
                raise SubmissionError(f"schedule {name!r} exists (remove it first)")
            pipe.multi()
            pipe.hset(self.key, name, spec.to_json())
            pipe.delete(self.last_key(name))  # the new schedule counts from its creation

        self.redis.transaction(txn, self.key, self.last_key(name))
        return spec

    def get(self, name: str) -> Schedule | None:
        raw = self.redis.hget(self.key, name)
        return Schedule.from_json(raw) if raw else None

    def all(self) -> list[Schedule]:
        raw: dict[Any, Any] = self.redis.hgetall(self.key)
        return sorted((Schedule.from_json(v) for v in raw.values()), key=lambda s: s.name)

    def lasts(self, names: list[str]) -> list[int | None]:
        if not names:
            return []
        values: list[Any] = self.redis.mget([self.last_key(n) for n in names])
        return [int(float(as_str(v))) if v is not None else None for v in values]

    def seen_count(self, name: str) -> int:
        return int(self.redis.scard(self.seen_key(name)))

    def remove(self, name: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.key, name)
        pipe.delete(self.last_key(name), self.seen_key(name))
        removed, _ = pipe.execute()
        return bool(removed)

    def pause(self, name: str) -> Schedule:
        return self._update(name, paused=True)

    def resume(self, name: str) -> Schedule:
        """Unpause. Ticks that fell while paused are dropped, not caught up: pausing
        means "do not run", and a catch-up run right after resume would contradict it."""
        return self._update(name, paused=False, drop_until=int(self.now()))

    def _update(self, name: str, *, paused: bool, drop_until: int | None = None) -> Schedule:
        done: list[Schedule] = []

        def txn(pipe: Any) -> None:  # redis-py retries this while a watched key changes
            raw = pipe.hget(self.key, name)
            if raw is None:
                raise SubmissionError(f"unknown schedule {name!r}")
            before = Schedule.from_json(raw)
            spec = replace(before, paused=paused)
            last = pipe.get(self.last_key(name))
            pipe.multi()
            pipe.hset(self.key, name, spec.to_json())
            # Only a schedule that was paused drops ticks: resuming a running one changes nothing.
            if (
                drop_until is not None
                and before.paused
                and (last is None or float(as_str(last)) < drop_until)
            ):
                pipe.set(self.last_key(name), drop_until)
            done[:] = [spec]

        self.redis.transaction(txn, self.key, self.last_key(name))
        return done[0]
