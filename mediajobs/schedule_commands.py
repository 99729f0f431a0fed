"""The ``mediapipe schedule`` commands: add, list, remove, pause, resume, run."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click

from mediajobs import presets
from mediajobs.command_errors import friendly_errors
from mediajobs.schedule_firing import run_scheduler
from pipeline.client import Client
from pipeline.cron import parse_every, time_zone
from pipeline.errors import SubmissionError
from pipeline.logsetup import configure_logging
from pipeline.schedules import MISFIRE_POLICIES, Schedule, Schedules


def _schedules(ctx: click.Context) -> Schedules:
    obj = ctx.find_root().obj or {}
    client = Client.connect(obj.get("url"), namespace=obj.get("namespace", "mp"))
    return Schedules(client, check_preset=presets.checked)


def _local(t: int | None, tz: str) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, time_zone(tz)).isoformat()


def schedule_group() -> click.Group:
    """The ``mediapipe schedule`` command group (``main.add_command(schedule_group(), ...)``)."""

    @click.group("schedule")
    def group() -> None:
        """Run a preset over files on a cron expression or an interval.

        A glob or a folder is watched: each content (by sha256) is submitted once, so a
        drop folder works; so is an object store's prefix, s3://bucket/prefix/ (each new
        object, by its ETag and size or its SHA-256 checksum, probed on a worker). A
        single file or object is submitted again on every tick. Schedules
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
    @click.option(
        "--priority",
        type=int,
        default=0,
        show_default=True,
        help="Priority of the DAGs it submits: higher runs first.",
    )
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
    @click.option(
        "--webhook",
        default=None,
        metavar="URL",
        help="POST a signed event to URL when each DAG it submits ends (docs/webhooks.md).",
    )
    @click.pass_context
    @friendly_errors
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
        webhook: str | None,
    ) -> None:
        """Add schedule NAME over PATH_OR_GLOB (quote a glob), or s3://bucket/prefix/.

        \b
        Example:
          mediapipe schedule add drop --cron "*/15 * * * *" --tz Europe/Paris \\
              --preset image '/srv/drop/**/*.png'
          mediapipe schedule add poster --every 10m --preset video /data/live.mp4
          mediapipe schedule add inbox --every 1m --out s3://media/renders \\
              s3://media/inbox/
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
            webhook=webhook,
        )
        first = spec.next_after(spec.created)
        kind = "watching" if spec.watch else "path"
        click.echo(f"added {spec.name}: {spec.when}, {kind} {spec.path}")
        click.echo(f"first run {_local(first, spec.tz)}")

    @group.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_context
    @friendly_errors
    def list_(ctx: click.Context, as_json: bool) -> None:
        """List schedules with their next and last tick.

        \b
        Example:
          mediapipe schedule list --json
        """
        s = _schedules(ctx)
        specs = s.all()
        now = s.now()
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
    @friendly_errors
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
    @friendly_errors
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
    @friendly_errors
    def resume(ctx: click.Context, name: str) -> None:
        """Fire NAME again from its next tick (ticks while paused are not caught up).

        \b
        Example:
          mediapipe schedule resume nightly
        """
        _schedules(ctx).resume(name)
        click.echo(f"resumed {name}")

    @group.command("run")
    @click.option(
        "--interval",
        type=float,
        default=1.0,
        show_default=True,
        help="Seconds between looks for due schedules.",
    )
    @click.pass_context
    @friendly_errors
    def run(ctx: click.Context, interval: float) -> None:
        """Run a scheduler in the foreground (workers may run one too; each tick fires once).

        \b
        Example:
          MEDIAPIPE_REDIS_URL=redis://queue:6379 mediapipe schedule run
        """
        configure_logging(logging.INFO)
        s = _schedules(ctx)
        stop = threading.Event()
        try:
            run_scheduler(s.client, stop, interval)
        except KeyboardInterrupt:
            stop.set()

    return group
