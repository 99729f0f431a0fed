"""Scheduled and repeatable DAGs: run a preset over a path, a folder or a glob on a cron
expression or a fixed interval.

A schedule is JSON in the hash ``{ns}:schedules`` (name -> schedule). Next to it,
``{ns}:schedule:<name>:last`` holds the newest tick already taken (epoch seconds) and
``{ns}:schedule:<name>:seen`` the sha256 of every input a watching schedule has handled.

Any number of schedulers may run (one in each worker node, say): each computes the
newest due tick of every schedule and tries to take it with the ``claim_tick`` script, a
compare-and-set on the ``last`` key. One caller wins a tick; the others see it taken.
Ticks missed while no scheduler ran collapse into the newest one, which fires once on
recovery (misfire policy ``once``) or not at all (``skip``): never a burst.

Cron expressions are evaluated by croniter in the schedule's time zone (zoneinfo); see
docs/schedules.md for what happens on the days clocks change.

    from pipeline.schedules import Schedules, Scheduler
    Schedules(client).add("drop", "/srv/drop/*.jpg", every=60, preset="image")
    Scheduler(client).tick()   # or run_scheduler(client, stop_event) in a thread
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from functools import wraps
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import redis
from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from pipeline.client import Client
from pipeline.errors import RedisUnavailableError, SubmissionError
from pipeline.replies import as_str
from workers.wire import MAX_MESSAGE, dag_from_wire, dag_to_wire

if TYPE_CHECKING:  # pipeline.submit loads the media stages: only the child needs them
    from pipeline.submit import Planned

log = logging.getLogger("mediapipe.schedules")

Clock = Callable[[], float]
F = TypeVar("F", bound=Callable[..., Any])

MISFIRE_POLICIES = ("once", "skip")
# Names become part of Redis keys, so keep them to characters that need no escaping.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EVENTS_MAXLEN = 100_000  # as EVENTS_GLOBAL in scripts/includes/common.lua


def parse_every(text: str) -> int:
    """``90``, ``30s``, ``10m``, ``2h``, ``1d`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not m or int(m.group(1)) == 0:
        raise SubmissionError(f"--every {text!r}: expected a positive duration like 30s, 10m, 2h")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def _zone(tz: str) -> ZoneInfo:
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


@dataclass(frozen=True)
class Schedule:
    """One schedule as stored (JSON). Paths are absolute: any node may fire it."""

    name: str
    path: str
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
        return _zone(self.tz)

    @property
    def when(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron!r} {self.tz}"
        return f"every {self.every}s"

    def newest_due(self, after: float, now: float) -> int | None:
        """The newest tick in (after, now]; ticks before it were missed and collapse into it."""
        if self.cron is not None:
            return cron_newest(self.cron, self.zone, after, now)
        every = int(self.every or 0)
        if now < self.created + every:
            return None
        # Interval ticks count real elapsed seconds from creation: no time zone, no DST.
        t = self.created + int((now - self.created) // every) * every
        return t if t > after else None

    def next_after(self, after: float) -> int:
        if self.cron is not None:
            return cron_next(self.cron, self.zone, after)
        every = int(self.every or 0)
        if after < self.created:
            return self.created + every
        return self.created + (int((after - self.created) // every) + 1) * every


@dataclass(frozen=True)
class SubmittedInput:
    path: str
    dag_id: str
    sha256: str
    created: bool  # False: an earlier firing had already submitted this content


@dataclass(frozen=True)
class Firing:
    """What one won tick did."""

    schedule: str
    tick: int
    late: bool
    submitted: tuple[SubmittedInput, ...] = ()
    rejected: tuple[tuple[str, str], ...] = ()  # (path, why)
    error: str | None = None


class Schedules:
    """Add, read, pause, resume and remove schedules."""

    def __init__(self, client: Client, *, clock: Clock = time.time) -> None:
        self.client = client
        self.redis = client.redis
        self._clock = clock
        self._prefix = client.keys.prefix

    # Key names; claim_tick.lua builds the same ones.
    @property
    def key(self) -> str:
        return self._prefix + "schedules"

    def last_key(self, name: str) -> str:
        return f"{self._prefix}schedule:{name}:last"

    def seen_key(self, name: str) -> str:
        return f"{self._prefix}schedule:{name}:seen"

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
    ) -> Schedule:
        if not _NAME.match(name):
            raise SubmissionError(f"schedule name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
        if (cron is None) == (every is None):
            raise SubmissionError("give exactly one of --cron and --every")
        zone = _zone(tz)
        now = int(self._clock())
        if cron is not None:
            cron = " ".join(cron.split())
            # Five fields (or @daily and friends): minute resolution, as every cron user expects.
            if not (cron.startswith("@") or len(cron.split()) == 5) or cron == "@reboot":
                raise SubmissionError(f"--cron {cron!r}: expected five fields, e.g. '*/15 * * * *'")
            try:
                cron_next(cron, zone, now)
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
        if preset != "auto":
            from pipeline import presets

            presets.load(preset)  # fail now, not at 2 a.m. on the first tick
            if preset not in presets.BUILTIN:
                preset = os.path.abspath(preset)
        full = os.path.abspath(os.path.expanduser(path))
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
            watch=glob.has_magic(full) or os.path.isdir(full),
            created=now,
            id=uuid.uuid4().hex[:16],
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
        return self._update(name, paused=False, drop_until=int(self._clock()))

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


class Scheduler:
    """Fires due schedules. Safe to run in any number of processes at once."""

    def __init__(self, client: Client, *, clock: Clock = time.time) -> None:
        self.client = client
        self.schedules = Schedules(client, clock=clock)
        self._clock = clock
        # (path, size, mtime, inode) -> sha256, so a watched folder is not re-read every tick.
        self._hashes: dict[tuple[str, int, int, int], str] = {}

    def tick(self) -> list[Firing]:
        """Take and fire every schedule's newest due tick; returns the firings this caller won."""
        now = self._clock()
        specs = [s for s in self.schedules.all() if not s.paused]
        fired: list[Firing] = []
        for spec, last in zip(specs, self.schedules.lasts([s.name for s in specs]), strict=True):
            # Before its first tick a schedule counts from its creation: no firing for the past.
            after = spec.created if last is None else max(last, spec.created)
            due = spec.newest_due(after, now)
            if due is None:
                continue
            late = now - due > spec.grace
            fire = not (late and spec.misfire == "skip")
            won = int(
                self.client.scripts.run(
                    "claim_tick", self.client.keys.prefix, spec.name, due, int(fire), spec.id
                )
            )
            if won != 1:
                continue
            try:
                fired.append(self._fire(spec, due, late))
            except Exception as exc:
                # The tick is taken; one broken schedule must not stop the others. A
                # watching schedule retries what it did not submit on its next tick.
                log.exception("schedule %s: firing tick %s failed", spec.name, due)
                fired.append(Firing(spec.name, due, late, error=f"{type(exc).__name__}: {exc}"))
        return fired

    # -- firing ----------------------------------------------------------------
    def _fire(self, spec: Schedule, tick: int, late: bool) -> Firing:
        inputs: list[tuple[Path, str | None]]
        if spec.watch:
            inputs = self._unseen(spec)
            # One key per content: a firing that crashed after submitting, or two firings
            # racing on one file, get the existing DAG back instead of a second one.
            key = f"schedule:{spec.name}"
        else:
            inputs = [(Path(spec.path), None)]  # a single path runs again on every tick
            key = f"schedule:{spec.name}:{tick}"
        if not inputs:
            return Firing(spec.name, tick, late)
        planned = plan_in_child(
            [str(p) for p, _ in inputs],
            spec.preset,
            spec.out,
            priority=spec.priority,
            idempotency_key=key,
        )
        todo = [(p, sha) for p, (_, sha) in zip(planned, inputs, strict=True) if p.dag]
        results = self.client.submit_many([p.dag for p, _ in todo if p.dag])
        submitted: list[SubmittedInput] = []
        rejected: list[tuple[str, str]] = []
        seen: list[str] = []
        for (p, sha), res in zip(todo, results, strict=True):
            digest = str((p.facts or {}).get("sha256") or sha)
            submitted.append(SubmittedInput(str(p.path), res.dag_id, digest, res.created))
            # Both hashes: the file may have changed between our read and the probe's.
            seen += [h for h in (sha, digest) if h]
            self._event("schedule_submitted", spec, tick, dag=res.dag_id, input=str(p.path))
        for p, (_, sha) in zip(planned, inputs, strict=True):
            if p.dag is None:
                # Unsupported or corrupt content stays seen: retrying it every tick is noise.
                rejected.append((str(p.path), p.error or "rejected"))
                seen += [sha] if sha else []
                self._event("schedule_rejected", spec, tick, input=str(p.path), error=p.error)
        # Marked seen only after the submission: a crash before this point means the next
        # tick submits again, and the idempotency key returns the same DAG.
        if spec.watch and seen:
            self.client.redis.sadd(self.schedules.seen_key(spec.name), *seen)
        return Firing(spec.name, tick, late, tuple(submitted), tuple(rejected))

    def _unseen(self, spec: Schedule) -> list[tuple[Path, str | None]]:
        """Settled files of a watching schedule whose content it has not handled yet."""
        if glob.has_magic(spec.path):
            names = glob.glob(spec.path, recursive=True)
        else:
            # A folder: its direct entries; dot files are usually partial uploads.
            try:
                names = [os.path.join(spec.path, n) for n in os.listdir(spec.path)]
            except FileNotFoundError:
                names = []
            names = [n for n in names if not os.path.basename(n).startswith(".")]
        # mtimes are real file-system time, so settle uses the real clock, not the injected one.
        wall = time.time()
        by_sha: dict[str, Path] = {}
        for name in sorted(names):
            try:
                st = os.stat(name)
            except OSError:
                continue  # gone since the listing
            if not os.path.isfile(name) or wall - st.st_mtime < spec.settle:
                continue
            sha = self._sha256(name, st)
            by_sha.setdefault(sha, Path(name))  # the same content twice: submit it once
        if not by_sha:
            return []
        flags: list[Any] = self.client.redis.smismember(
            self.schedules.seen_key(spec.name), list(by_sha)
        )
        return [(p, sha) for (sha, p), f in zip(by_sha.items(), flags, strict=True) if not f]

    def _sha256(self, name: str, st: os.stat_result) -> str:
        from stages.output import sha256_of

        key = (name, st.st_size, st.st_mtime_ns, st.st_ino)
        sha = self._hashes.get(key)
        if sha is None:
            if len(self._hashes) > 100_000:
                self._hashes.clear()
            sha = self._hashes[key] = sha256_of(name)
        return sha

    def _event(self, ev: str, spec: Schedule, tick: int, **extra: str | None) -> None:
        fields_: dict[Any, Any] = {
            "ev": ev,
            "dag": "",
            "job": "",
            "schedule": spec.name,
            "tick": str(tick),
        }
        fields_.update({k: v for k, v in extra.items() if v is not None})
        self.client.redis.xadd(
            self.client.keys.events, fields_, maxlen=_EVENTS_MAXLEN, approximate=True
        )


# -- probing out of process --------------------------------------------------------------
# Planning probes each input: libvips, PyAV and a first-frame decode of untrusted files. A
# scheduler runs in a worker node, whose process holds the lease of every running job, so a
# decoder crash there would take them all down. The probes run in a child process instead,
# which answers in JSON (workers/wire.py: never a pickle from the side that decodes); the
# DAGs are rebuilt and validated here.
PROBE_TIMEOUT = 120.0  # seconds per input, as the probe stage's own timeout


def plan_in_child(
    paths: list[str], preset: str, out: str, *, priority: int, idempotency_key: str
) -> list[Planned]:
    """``pipeline.submit.plan`` run in a child process. An input whose probe crashes or hangs
    the child is rejected with that reason; the others are planned as usual."""
    from pipeline.submit import Planned

    args = (preset, out, priority, idempotency_key)
    answer = _plan_child_run(paths, args)
    if not isinstance(answer, str):
        return answer
    if len(paths) == 1:
        return [Planned(Path(paths[0]), Path(out), error=f"{paths[0]}: {answer}", status="failed")]
    # Find the input that crashed it: each one alone.
    planned: list[Planned] = []
    for path in paths:
        alone = _plan_child_run([path], args)
        if isinstance(alone, str):
            alone = [Planned(Path(path), Path(out), error=f"{path}: {alone}", status="failed")]
        planned += alone
    return planned


def _plan_child_run(paths: list[str], args: tuple[str, str, int, str]) -> list[Planned] | str:
    """The child's plans, or why there are none (it crashed, or ran out of time)."""
    ctx = multiprocessing.get_context("forkserver")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_plan_child, args=(child_conn, paths, *args), daemon=True)
    proc.start()
    child_conn.close()
    try:
        if parent_conn.poll(PROBE_TIMEOUT * len(paths)):
            with contextlib.suppress(EOFError):
                answer = parent_conn.recv_bytes(MAX_MESSAGE)
                try:
                    return _plans_from_wire(paths, json.loads(answer))
                except (ValueError, KeyError, TypeError, AttributeError):
                    return "the probing process sent a malformed answer; not submitted"
        else:
            proc.kill()
        proc.join(5)
        code = proc.exitcode
        if code is not None and code < 0:
            return f"the probe crashed ({signal.Signals(-code).name}); not submitted"
        return f"the probe crashed or timed out (exit code {code}); not submitted"
    finally:
        parent_conn.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)


def _plan_child(
    conn: Connection, paths: list[str], preset: str, out: str, priority: int, key: str
) -> None:
    from pipeline.submit import plan

    planned = plan(paths, preset, out, priority=priority, idempotency_key=key)
    doc = [
        {
            "path": str(p.path),
            "out_dir": str(p.out_dir),
            "facts": p.facts,
            "error": p.error,
            "status": p.status,
            "dag": dag_to_wire(p.dag) if p.dag is not None else None,
        }
        for p in planned
    ]
    conn.send_bytes(json.dumps(doc, default=str).encode())


def _plans_from_wire(paths: list[str], doc: Any) -> list[Planned]:
    """The child's answer, checked: one plan per input asked for, in order."""
    from pipeline.submit import Planned

    if not isinstance(doc, list) or [d["path"] for d in doc] != paths:
        raise ValueError("the probing child answered for other inputs than it was given")
    return [
        Planned(
            Path(d["path"]),
            Path(str(d["out_dir"])),
            facts=dict(d["facts"]) if d.get("facts") is not None else None,
            dag=dag_from_wire(d["dag"]) if d.get("dag") is not None else None,
            error=None if d.get("error") is None else str(d["error"]),
            status=str(d.get("status", "pending")),
        )
        for d in doc
    ]


def run_scheduler(
    client: Client,
    stop_event: threading.Event,
    interval: float = 1.0,
    *,
    clock: Clock = time.time,
) -> None:
    """Fire due schedules every ``interval`` seconds until ``stop_event`` is set.

    Meant for a thread in every worker node: running it in many places is what keeps the
    schedules firing while nodes come and go, and claim_tick keeps each tick to one firing.
    """
    scheduler = Scheduler(client, clock=clock)
    while not stop_event.is_set():
        try:
            for f in scheduler.tick():
                log.info(
                    "schedule %s fired tick %s%s: %d submitted, %d rejected",
                    f.schedule,
                    f.tick,
                    " (late)" if f.late else "",
                    len(f.submitted),
                    len(f.rejected),
                )
        except redis.RedisError as exc:
            log.warning("scheduler: Redis unavailable (%s); trying again", exc)
        except Exception:
            log.exception("scheduler: tick failed; trying again")  # keep the loop alive
        stop_event.wait(interval)


# -- the `mediapipe schedule` commands ------------------------------------------------------
def _friendly(fn: F) -> F:
    """One line on stderr and the CLI's exit codes (2 rejected, 3 Redis) instead of a
    traceback. pipeline.cli has the same wrapper; importing it here would be circular."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RedisUnavailableError as exc:
            click.echo(f"mediapipe: {exc}", err=True)
            sys.exit(3)
        except SubmissionError as exc:
            click.echo(f"mediapipe: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _schedules(ctx: click.Context) -> Schedules:
    obj = ctx.find_root().obj or {}
    return Schedules(Client.connect(obj.get("url"), namespace=obj.get("namespace", "mp")))


def _local(t: int | None, tz: str) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, _zone(tz)).isoformat()


def schedule_group() -> click.Group:
    """The ``mediapipe schedule`` command group (``main.add_command(schedule_group(), ...)``)."""

    @click.group("schedule")
    def group() -> None:
        """Run a preset over files on a cron expression or an interval.

        A glob or a folder is watched: each content (by sha256) is submitted once, so a
        drop folder works. A single file is submitted again on every tick. Schedules
        fire from any `mediapipe worker` (or `mediapipe schedule run`); however many run,
        each tick fires once.

        \b
        Example:
          mediapipe schedule add photos --every 1m --preset image '/srv/drop/*.jpg'
          mediapipe schedule add nightly --cron "30 2 * * *" --tz Europe/Paris \\
              --preset video /data/masters
          mediapipe schedule list
          mediapipe schedule pause nightly
        """

    @group.command("add")
    @click.argument("name")
    @click.argument("path_or_glob", nargs=-1, required=True, metavar="PATH_OR_GLOB")
    @click.option("--cron", default=None, help="Cron expression, five fields: '*/15 * * * *'.")
    @click.option("--every", default=None, help="Fixed interval instead: 30s, 10m, 2h, 1d.")
    @click.option("--tz", default="UTC", show_default=True, help="Time zone of --cron (IANA name).")
    @click.option(
        "--preset", default="auto", show_default=True, help="auto, image, video, or a TOML file."
    )
    @click.option(
        "--out",
        default="mediapipe-out",
        show_default=True,
        help="Output folder (one subfolder per input), or s3://bucket/prefix.",
    )
    @click.option("--priority", type=int, default=0, show_default=True)
    @click.option(
        "--misfire",
        type=click.Choice(MISFIRE_POLICIES),
        default="once",
        show_default=True,
        help="A tick found later than --grace (nothing ran): fire it once, or skip it.",
    )
    @click.option(
        "--grace",
        type=float,
        default=60.0,
        show_default=True,
        help="Seconds after its time a tick still counts as on time.",
    )
    @click.option(
        "--settle",
        type=float,
        default=5.0,
        show_default=True,
        help="Watched files changed within this many seconds wait for a later tick.",
    )
    @click.pass_context
    @_friendly
    def add(
        ctx: click.Context,
        name: str,
        path_or_glob: tuple[str, ...],
        cron: str | None,
        every: str | None,
        tz: str,
        preset: str,
        out: str,
        priority: int,
        misfire: str,
        grace: float,
        settle: float,
    ) -> None:
        """Add schedule NAME over PATH_OR_GLOB (quote a glob).

        \b
        Example:
          mediapipe schedule add drop --cron "*/15 * * * *" --tz Europe/Paris \\
              --preset image '/srv/drop/**/*.png'
          mediapipe schedule add poster --every 10m --preset video /data/live.mp4
        """
        if len(path_or_glob) > 1:
            # The shell expanded an unquoted glob into a list of files.
            raise click.UsageError("one PATH_OR_GLOB only: quote a glob so the shell keeps it")
        s = _schedules(ctx)
        spec = s.add(
            name,
            path_or_glob[0],
            cron=cron,
            every=parse_every(every) if every is not None else None,
            tz=tz,
            preset=preset,
            out=out,
            priority=priority,
            misfire=misfire,
            grace=grace,
            settle=settle,
        )
        first = spec.next_after(spec.created)
        kind = "watching" if spec.watch else "path"
        click.echo(f"added {spec.name}: {spec.when}, {kind} {spec.path}")
        click.echo(f"first run {_local(first, spec.tz)}")

    @group.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_context
    @_friendly
    def list_(ctx: click.Context, as_json: bool) -> None:
        """List schedules with their next and last tick.

        \b
        Example:
          mediapipe schedule list --json
        """
        s = _schedules(ctx)
        specs = s.all()
        now = time.time()
        rows: list[tuple[Schedule, dict[str, Any]]] = []
        for spec, last in zip(specs, s.lasts([x.name for x in specs]), strict=True):
            after = max(now, spec.created, last or 0)
            row = {
                **asdict(spec),
                "last": last,
                "next": None if spec.paused else spec.next_after(after),
                "seen": s.seen_count(spec.name),
            }
            rows.append((spec, row))
        if as_json:
            click.echo(json.dumps([row for _, row in rows]))
            return
        if not rows:
            click.echo("no schedules")
        for spec, row in rows:
            state = "paused" if spec.paused else f"next {_local(row['next'], spec.tz)}"
            seen = f"  ({row['seen']} seen)" if spec.watch else ""
            click.echo(
                f"{spec.name:16} {spec.when:32} {state}  last {_local(row['last'], spec.tz)}  "
                f"{spec.preset}  {spec.path}{seen}"
            )

    @group.command("remove")
    @click.argument("name")
    @click.pass_context
    @_friendly
    def remove(ctx: click.Context, name: str) -> None:
        """Delete a schedule and what it remembers (DAGs it submitted stay).

        \b
        Example:
          mediapipe schedule remove nightly
        """
        if not _schedules(ctx).remove(name):
            raise SubmissionError(f"unknown schedule {name!r}")
        click.echo(f"removed {name}")

    @group.command("pause")
    @click.argument("name")
    @click.pass_context
    @_friendly
    def pause(ctx: click.Context, name: str) -> None:
        """Stop firing NAME until resumed.

        \b
        Example:
          mediapipe schedule pause nightly
        """
        _schedules(ctx).pause(name)
        click.echo(f"paused {name}")

    @group.command("resume")
    @click.argument("name")
    @click.pass_context
    @_friendly
    def resume(ctx: click.Context, name: str) -> None:
        """Fire NAME again from its next tick (ticks while paused are not caught up).

        \b
        Example:
          mediapipe schedule resume nightly
        """
        _schedules(ctx).resume(name)
        click.echo(f"resumed {name}")

    @group.command("run")
    @click.option("--interval", type=float, default=1.0, show_default=True)
    @click.pass_context
    @_friendly
    def run(ctx: click.Context, interval: float) -> None:
        """Run a scheduler in the foreground (workers may run one too; each tick fires once).

        \b
        Example:
          MEDIAPIPE_REDIS_URL=redis://queue:6379 mediapipe schedule run
        """
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        s = _schedules(ctx)
        stop = threading.Event()
        try:
            run_scheduler(s.client, stop, interval)
        except KeyboardInterrupt:
            stop.set()

    return group
