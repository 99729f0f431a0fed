"""The ``mediapipe`` command: each subcommand parses its options, calls the application
or the engine, and prints. Exit codes: ``pipeline.errors.ExitCode``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from mediajobs import json_documents as documents
from mediajobs import settings
from mediajobs.command_errors import friendly_errors
from pipeline import liveness
from pipeline.breaker import ServiceBreakers
from pipeline.client import Client
from pipeline.connection import redacted, resolve_url, url_problem
from pipeline.errors import ExitCode, SubmissionError
from pipeline.keys import DAG_ID_MAX, JOB_NAME_MAX, Keys, check_identifier
from pipeline.logsetup import FORMATS, configure_logging, prefer_format
from pipeline.outage import Outage
from pipeline.recent_dags import DAG_STATES, Listing, recent_dags
from pipeline.replies import as_str, as_str_dict
from pipeline.retention import Retention, parse_duration
from pipeline.server import EmbeddedServer
from pipeline.serving import unserved
from pipeline.webhooks import check_url

if TYPE_CHECKING:
    from mediajobs.planning import Outcome

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# Command groups imported when used (or listed by -h): they pull in the media stages,
# the dashboard's web server and the schedule firing, a third of the start-up time of a
# command that needs none of them.
def _dashboard() -> click.Command:
    from mediajobs.dashboard import dashboard_command

    return dashboard_command()


def _schedule() -> click.Command:
    from mediajobs.schedule_commands import schedule_group

    return schedule_group()


LAZY_COMMANDS: dict[str, Callable[[], click.Command]] = {
    "dashboard": _dashboard,
    "schedule": _schedule,
}


class OneLineErrors(click.Group):
    """The ``mediapipe`` group: a bad option, argument or command is one line on stderr
    naming the command and exit 2 (click's own is usage, a hint and the error on four)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            self.add_command(LAZY_COMMANDS[cmd_name](), cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "mediapipe"
            message = " ".join(exc.format_message().split())
            click.echo(f"{where}: {message} (see {where} -h)", err=True)
            sys.exit(ExitCode.BAD_INPUT)
        except click.ClickException as exc:
            click.echo(f"mediapipe: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:  # Ctrl-C at a prompt or while parsing
            click.echo("mediapipe: interrupted", err=True)
            sys.exit(ExitCode.INTERRUPTED)
        # Not standalone: an explicit ctx.exit(n) comes back as n, a finished command as
        # its return value (None).
        sys.exit(rv if isinstance(rv, int) else ExitCode.OK)


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Read the config file before any other option is resolved (this option is eager):
    its values become the defaults the flags and the environment override."""
    try:
        settings.load(ctx, value)
    except settings.ConfigError:
        if ctx.resilient_parsing:  # shell completion: complete anyway
            return
        raise


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    envvar=settings.ENV_CONFIG,
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="Config file (TOML). Default: config.toml in the user's config dir, "
    "e.g. ~/.config/mediapipe/config.toml (docs/configuration.md).",
)
@click.version_option(
    None,
    "-V",
    "--version",
    package_name="mediajobs",
    prog_name="mediapipe",
    message="%(prog)s %(version)s",
    help="Print the version and exit.",
)
@click.option(
    "--redis",
    "redis_url",
    envvar="MEDIAPIPE_REDIS_URL",
    default=None,
    help="Redis URL (redis://, rediss://, unix://), best given as $MEDIAPIPE_REDIS_URL or "
    "--redis-file: on the command line its password shows in ps. Default: the embedded server.",
)
@click.option(
    "--redis-file",
    envvar="MEDIAPIPE_REDIS_URL_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the Redis URL from this file (first line), e.g. a mounted secret.",
)
@click.option(
    "--namespace",
    envvar="MEDIAPIPE_NAMESPACE",
    default="mp",
    show_default=True,
    help="Key namespace in Redis (one Redis can hold several independent fleets).",
)
@click.option(
    "--log-format",
    envvar="MEDIAPIPE_LOG_FORMAT",
    type=click.Choice(FORMATS, case_sensitive=False),
    default="plain",
    show_default=True,
    help="Log lines as plain text or one JSON object per line (worker, dashboard, "
    "schedule run, submit -v).",
)
@click.pass_context
def main(
    ctx: click.Context,
    redis_url: str | None,
    redis_file: Path | None,
    namespace: str,
    log_format: str,
) -> None:
    """mediapipe: media renditions and transcodes as Redis-coordinated DAGs.

    \b
    Example:
      mediapipe server start
      export MEDIAPIPE_REDIS_URL=unix://...   (printed by the line above)
      mediapipe status
    """
    if redis_file is not None:
        redis_url = secret_from_file(redis_file, "--redis-file")
    else:
        warn_if_secret_on_argv(ctx, "redis_url", redis_url, "MEDIAPIPE_REDIS_URL or --redis-file")
    try:
        Keys(namespace)  # a bad namespace is refused before a server is started for it
    except SubmissionError as exc:
        click.echo(f"mediapipe: {exc}", err=True)
        ctx.exit(ExitCode.BAD_INPUT)
    problem = url_problem(redis_url) if redis_url else None
    if problem is not None:
        # Before any subcommand runs: one line, not redis-py's traceback from each.
        click.echo(f"mediapipe: {problem}", err=True)
        ctx.exit(ExitCode.BAD_INPUT)
    prefer_format(log_format)  # for the commands that set up logging themselves
    ctx.obj = {"url": redis_url, "namespace": namespace, "log_format": log_format}


def secret_from_file(path: Path, option: str) -> str:
    """The first line of ``path``: a URL or token kept out of argv and the environment."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=option) from None
    if not lines or not lines[0].strip():
        raise click.BadParameter(f"{path} is empty", param_hint=option)
    return lines[0].strip()


def warn_if_secret_on_argv(ctx: click.Context, param: str, value: str | None, use: str) -> None:
    """Say so when a password was typed on the command line: every local user can read
    it in ``ps`` (and it lands in shell history)."""
    if value and redacted(value) != value and _from_argv(ctx, param):
        click.echo(
            f"mediapipe: warning: a password on the command line shows in ps; use {use}", err=True
        )


def _from_argv(ctx: click.Context, param: str) -> bool:
    return ctx.get_parameter_source(param) is ParameterSource.COMMANDLINE


def _client(ctx: click.Context) -> Client:
    return Client.connect(ctx.obj["url"], namespace=ctx.obj["namespace"])


@main.group()
def server() -> None:
    """Run the embedded Redis-protocol server as a background service.

    \b
    Example:
      mediapipe server start && export MEDIAPIPE_REDIS_URL=$(mediapipe server url)
    """


@server.command("start")
@friendly_errors
def server_start() -> None:
    """Start the embedded server (no-op if it already runs) and print its URL.

    \b
    Example:
      mediapipe server start
    """
    s = EmbeddedServer.default()
    started = s.ensure_running()
    click.echo(f"{'started' if started else 'already running'}: export MEDIAPIPE_REDIS_URL={s.url}")


@server.command("stop")
@friendly_errors
def server_stop() -> None:
    """Shut the embedded server down cleanly (its data stays on disk).

    \b
    Example:
      mediapipe server stop
    """
    stopped = EmbeddedServer.default().stop()
    click.echo("stopped" if stopped else "not running")


@server.command("status")
@friendly_errors
def server_status() -> None:
    """Say whether the embedded server runs, and where (exit 1 when it does not).

    \b
    Example:
      mediapipe server status
    """
    s = EmbeddedServer.default()
    running = s.is_running()
    click.echo(f"{'running' if running else 'stopped'}: {s.url} (data: {s.data_dir})")
    sys.exit(ExitCode.OK if running else ExitCode.FAILED)


@server.command("url")
def server_url() -> None:
    """Print the embedded server's URL (for MEDIAPIPE_REDIS_URL).

    \b
    Example:
      export MEDIAPIPE_REDIS_URL=$(mediapipe server url)
    """
    click.echo(EmbeddedServer.default().url)


@main.command()
@click.argument("dag_id", required=False)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="Recent DAGs listed (without DAG_ID).",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(DAG_STATES, case_sensitive=False),
    help="List only DAGs in this state (repeat for several).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable (docs/json-output.md).")
@click.pass_context
@friendly_errors
def status(
    ctx: click.Context, dag_id: str | None, limit: int, states: tuple[str, ...], as_json: bool
) -> None:
    """One DAG in detail, or the recent DAGs (newest first) and the queues.

    \b
    Example:
      mediapipe status                     # recent DAGs, queues, workers
      mediapipe status --state failed --limit 5
      mediapipe status 6d0ea5aa51af494f --json
    """
    c = _client(ctx)
    now_ms = liveness.redis_now_ms(c.redis)
    workers = liveness.live_workers(c.redis, c.keys, now_ms)
    if dag_id:
        _status_of_dag(c, dag_id, now_ms, len(workers), as_json)
        return
    wanted = sorted({s.lower() for s in states})
    listing = recent_dags(c.redis, c.keys, limit=limit, states=wanted)
    overview = {q: c.queue_counts(q) for q in c.queues()}
    overview_dead = c.redis.zcard(c.keys.dead)
    gaps = c.capability_gaps()
    expired = {q: liveness.lapsed_in_queue(c.redis, c.keys, q, now_ms) for q in overview}
    breakers = ServiceBreakers(c.redis, namespace=ctx.obj["namespace"]).states()
    if as_json:
        doc = documents.overview(
            listing,
            now_ms,
            limit=limit,
            states=wanted,
            queues=overview,
            leases_expired={q: n for q, (n, _) in expired.items()},
            dead=int(overview_dead),
            workers=c.worker_beats(),
            gaps=gaps,
            breakers=breakers,
        )
        click.echo(json.dumps(doc))
        return
    _print_dags(listing, now_ms, limit, wanted)
    click.echo(f"Redis: {redacted(resolve_url(ctx.obj['url'], start_embedded=False))}")
    for q, counts in overview.items():
        paused = " (paused)" if counts["paused"] else ""
        n, oldest = expired[q]
        note = ""
        if n:
            note = f"  (1 lease expired {liveness.ago(oldest)})"
            if n > 1:
                note = f"  ({n} leases expired, oldest {liveness.ago(oldest)})"
        click.echo(
            f"  {q:16} waiting {counts['waiting']:6}  active {counts['active']:4}  "
            f"delayed {counts['delayed']:5}{paused}{note}"
        )
    click.echo(f"  dead-letter queue: {overview_dead}")
    for w in workers:
        click.echo(
            f"  worker {w['id']}: capacity {w.get('capacity')} in use "
            f"{w.get('in_use')} done {w.get('jobs_done')} failed "
            f"{w.get('jobs_failed')} tags {w.get('tags') or '-'} ({w.get('state')})"
        )
    for name, b in breakers.items():
        click.echo(
            f"  breaker {name}: {b.get('state', 'closed')} "
            f"(failures in a row {b.get('failures', 0)}, opened {b.get('opened_count', 0)}x)"
        )
    if not workers:
        click.echo("  no worker is running: start one with `mediapipe worker`")
    for q, n in gaps.items():
        why = "a capability no live worker has" if workers else "a worker"
        click.echo(f"  {n} jobs in {q} wait for {why}")


def _status_of_dag(c: Client, dag_id: str, now_ms: int, alive: int, as_json: bool) -> None:
    check_identifier(dag_id, "DAG id", DAG_ID_MAX)
    dag = c.dag(dag_id)
    if dag is None:
        raise SubmissionError(f"unknown DAG {dag_id}")
    jobs = c.jobs(dag_id)
    lapsed = liveness.lapsed_jobs(c.redis, c.keys, jobs, now_ms)
    not_served = unserved(c.redis, c.keys, dag_id, now_ms) if dag["state"] == "running" else []
    if as_json:
        doc = documents.dag_status(
            dag, jobs, now_ms=now_ms, workers_alive=alive, lapsed=lapsed, not_served=not_served
        )
        click.echo(json.dumps(doc))
        return
    click.echo(
        f"DAG {dag_id}: {dag['state']} {dag['percent']:.0f}% "
        f"({dag['completed']}/{dag['total']} done, {dag['dead']} dead)"
    )
    for name, j in jobs.items():
        err = j.get("error") or {}
        line = f"  {name:24} {j['state']:16} attempt {j['attempts']}/{j['max_attempts']}"
        if name in lapsed:
            # Its worker stopped renewing it: the progress shown is stale.
            line += f"  lease expired {liveness.ago(lapsed[name])}, waiting for a worker"
        elif j["state"] == "delayed" and j.get("waiting_for"):
            line += f"  waiting for {j['waiting_for']}"
        elif j["state"] != "completed" and isinstance(err, dict) and err.get("message"):
            # A completed job keeps the error of an attempt that failed before: not shown.
            line += f"  {err.get('type')}: {err['message']}"
        click.echo(line)
    for u in not_served:
        click.echo(f"  {u.message}")


def _print_dags(listing: Listing, now_ms: int, limit: int, states: list[str]) -> None:
    which = f"{'/'.join(states)} DAGs" if states else "DAGs"
    if not listing.dags:
        click.echo(f"No {which} found.")
    else:
        click.echo(f"Recent {which}, newest first (--limit {limit}):")
        width = max(16, *(len(d.id) for d in listing.dags))
        click.echo(f"  {'DAG':{width}}  {'STATE':9}  {'AGE':>8}  {'TOOK':>8}  {'DONE':>9}  INPUT")
        for d in listing.dags:
            took = _span((d.finished_ms or now_ms) - d.created_ms) if d.created_ms else "-"
            age = _span(now_ms - d.created_ms) if d.created_ms else "-"
            done = f"{d.completed}/{d.total}"
            what = str(d.meta.get("input") or "-").rsplit("/", 1)[-1]
            if d.dead:
                what += f"  ({d.dead} dead)"
            click.echo(f"  {d.id:{width}}  {d.state:9}  {age:>8}  {took:>8}  {done:>9}  {what}")
    if not listing.complete:
        click.echo(
            "  (DAGs submitted before the fleet event stream's window that have not finished "
            "and run nothing now are not listed)"
        )


def _span(ms: int) -> str:
    """A duration in the unit a person reads it in: 45 s, 12 min, 3.5 h, 2.0 d."""
    seconds = max(0, ms) / 1000
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@main.command()
@click.argument("dag_id")
@click.pass_context
@friendly_errors
def watch(ctx: click.Context, dag_id: str) -> None:
    """Follow a DAG submitted elsewhere until it finishes. Says so, on one line, while
    nothing serves its queue (no live worker takes it, or it is paused), and once more
    when something does again.

    \b
    Example:
      mediapipe watch 6d0ea5aa51af494f
    """
    from mediajobs.progress_view import follower
    from mediajobs.watch_view import ServingView

    check_identifier(dag_id, "DAG id", DAG_ID_MAX)
    outage = Outage()
    c = follower(ctx.obj["url"], ctx.obj["namespace"], outage)
    dag = outage.call(lambda: c.dag(dag_id))
    if dag is None:
        raise SubmissionError(f"unknown DAG {dag_id}")
    label = str(dag["meta"].get("input", dag_id)).rsplit("/", 1)[-1]
    with ServingView(c, dag_id, label, outage) as view:
        outage.notice = view.notice
        view.run_until_done()
    state = outage.call(lambda: c.dag_state(dag_id))
    click.echo(f"{dag_id}: {state}")
    sys.exit(ExitCode.OK if state == "completed" else ExitCode.FAILED)


@main.group()
def dlq() -> None:
    """The dead-letter queue: jobs that failed for good, with their error and input.

    \b
    Example:
      mediapipe dlq list
      mediapipe dlq retry ALL
    """


@dlq.command("list")
@click.option(
    "--limit", type=click.IntRange(1), default=1000, show_default=True, help="Jobs listed."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable (docs/json-output.md).")
@click.pass_context
@friendly_errors
def dlq_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List dead jobs with their error, oldest first.

    \b
    Example:
      mediapipe dlq list
      mediapipe dlq list --json | jq -r '.dead[].id'
    """
    c = _client(ctx.find_root())
    pairs: Any = c.redis.zrange(c.keys.dead, 0, limit - 1, withscores=True)
    total = int(c.redis.zcard(c.keys.dead))
    dead = []
    for member, score in pairs:
        job = c.job(as_str(member))
        if job is not None:
            dead.append((job, int(score)))
    if as_json:
        click.echo(json.dumps(documents.dead_list(dead, total=total, limit=limit)))
        return
    for j, _ in dead:
        err = j.get("error") or {}
        click.echo(f"{j['id']}  {j['stage']}  {err.get('type')}: {err.get('message')}")
    if total > len(pairs):
        click.echo(f"({total - len(pairs)} more: --limit {total})")


@dlq.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable (docs/json-output.md).")
@click.pass_context
@friendly_errors
def dlq_show(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Everything about one dead job: error, traceback, input, attempts, worker, times.

    \b
    Example:
      mediapipe dlq show 6d0ea5aa51af494f/probe
      mediapipe dlq show 6d0ea5aa51af494f/probe --json
    """
    c = _client(ctx.find_root())
    dag_id, _, name = job_id.partition("/")
    check_identifier(dag_id, "DAG id", DAG_ID_MAX)
    check_identifier(name, "job name", JOB_NAME_MAX)
    job = c.job(job_id)
    since = c.redis.zscore(c.keys.dead, job_id)
    if job is None or job.get("state") != "dead":
        raise SubmissionError(f"job {job_id} is not in the dead-letter queue")
    doc = documents.dead_show(job, int(since) if since is not None else None)
    if as_json:
        click.echo(json.dumps(doc))
        return
    j = doc["job"]
    err = j["error"] or {}
    click.echo(f"{j['id']}  {j['stage']}  dead (attempt {j['attempts']}/{j['max_attempts']})")
    click.echo(f"  queue:   {j['queue']}")
    click.echo(f"  worker:  {j['worker'] or '-'}")
    if j["duration_s"] is not None:
        click.echo(f"  ran:     {j['duration_s']} s")
    click.echo(f"  error:   {err.get('type') or '-'}: {err.get('message') or '-'}")
    click.echo(f"  params:  {json.dumps(j['params'])}")
    traceback = str(err.get("traceback") or "").rstrip()
    if traceback:
        click.echo("  traceback:")
        for line in traceback.splitlines():
            click.echo(f"    {line}")


@dlq.command("retry")
@click.argument("job_id")
@click.pass_context
@friendly_errors
def dlq_retry(ctx: click.Context, job_id: str) -> None:
    """Retry one dead job (or ALL) with fresh attempts.

    \b
    Example:
      mediapipe dlq retry 6d0ea5aa51af494f/probe
      mediapipe dlq retry ALL
    """
    c = _client(ctx.find_root())
    if job_id == "ALL":
        click.echo(f"retried {c.retry_all_dead()} jobs")
    else:
        c.retry_dead(job_id)
        click.echo(f"retried {job_id}")


@dlq.command("purge")
@click.pass_context
@friendly_errors
def dlq_purge(ctx: click.Context) -> None:
    """Forget every dead job.

    \b
    Example:
      mediapipe dlq purge
    """
    click.echo(f"purged {_client(ctx.find_root()).purge_dead()}")


@main.command()
@click.argument("dag_id")
@click.pass_context
@friendly_errors
def cancel(ctx: click.Context, dag_id: str) -> None:
    """Cancel a DAG: pending jobs stop, running ones are told to stop.

    \b
    Example:
      mediapipe cancel 6d0ea5aa51af494f
    """
    cancelled, running = _client(ctx).cancel(dag_id)
    click.echo(f"cancelled {cancelled} pending jobs; {running} running jobs told to stop")


@main.command()
@click.argument("dag_id")
@click.option(
    "--out",
    "out_dir",
    default=".",
    show_default=True,
    type=click.Path(),
    help="Folder to write into (the outputs land in DIR/<name>/).",
)
@click.option(
    "--s3-endpoint",
    default=None,
    help="S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL, else AWS).",
)
@click.pass_context
@friendly_errors
def fetch(ctx: click.Context, dag_id: str, out_dir: str, s3_endpoint: str | None) -> None:
    """Download a finished DAG's outputs from object storage into a folder, each checked
    against the size and SHA-256 it was published with.

    \b
    Example:
      mediapipe fetch 6d0ea5aa51af494f --out renders/
    """
    from mediajobs.staging import fetch_outputs, outputs_prefix

    check_identifier(dag_id, "DAG id", DAG_ID_MAX)
    c = _client(ctx)
    if c.dag_state(dag_id) != "completed":
        raise SubmissionError(f"DAG {dag_id} is {c.dag_state(dag_id) or 'unknown'}, not completed")
    manifest = next((j for j in c.jobs(dag_id).values() if j.get("stage") == "manifest"), None)
    prefix = outputs_prefix(manifest.get("params") or {}) if manifest else None
    if prefix is None:
        raise SubmissionError(f"DAG {dag_id} wrote no outputs to object storage")
    name = prefix.rsplit("/", 1)[-1]
    got = fetch_outputs(prefix, Path(out_dir) / name, s3_endpoint or manifest_endpoint(manifest))
    click.echo(f"fetched {len(got)} files into {Path(out_dir) / name}")


def manifest_endpoint(job: dict[str, Any] | None) -> str | None:
    endpoint = (job or {}).get("params", {}).get("endpoint")
    return str(endpoint) if endpoint else None


def _webhook(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The URL checked before anything is probed or queued (one line, exit 2)."""
    try:
        return None if value is None else check_url(value)
    except SubmissionError as exc:
        raise click.BadParameter(str(exc)) from None


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    try:
        return None if value is None else parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.option("--completed-age", callback=_duration, help="Keep completed DAGs this long.")
@click.option("--completed-count", type=int, help="Keep at most this many completed DAGs.")
@click.option("--failed-age", callback=_duration, help="Keep failed and cancelled DAGs this long.")
@click.option("--failed-count", type=int, help="Keep at most this many failed DAGs.")
@click.option("--dead-age", callback=_duration, help="Keep dead-letter entries this long.")
@click.option("--dead-count", type=int, help="Keep at most this many dead-letter entries.")
@click.option("--events-age", callback=_duration, help="Keep fleet events this long.")
@click.option("--budget", type=int, help="Jobs deleted per step (each step is atomic).")
@click.pass_context
@friendly_errors
def prune(
    ctx: click.Context,
    completed_age: float | None,
    completed_count: int | None,
    failed_age: float | None,
    failed_count: int | None,
    dead_age: float | None,
    dead_count: int | None,
    events_age: float | None,
    budget: int | None,
) -> None:
    """Delete finished DAGs, dead-letter entries and fleet events past retention now.

    Workers do this on their own every 30 s; unset options take the values the workers
    use (MEDIAPIPE_RETENTION_* or the defaults). Durations: 90s, 15m, 24h, 14d.

    \b
    Example:
      mediapipe prune --completed-age 1h --failed-age 2d
    """
    given: dict[str, Any] = {
        "completed_age": completed_age,
        "completed_count": completed_count,
        "failed_age": failed_age,
        "failed_count": failed_count,
        "dead_age": dead_age,
        "dead_count": dead_count,
        "events_age": events_age,
        "budget": budget,
    }
    retention = dataclasses.replace(
        Retention.from_env() or Retention(), **{k: v for k, v in given.items() if v is not None}
    )
    click.echo(str(_client(ctx).prune(retention)))


@main.command()
@click.argument("queue")
@click.option("--rate", default=None, help="Jobs started per interval, e.g. 5/1s or 100/60s.")
@click.option("--concurrency", type=int, default=None, help="Jobs running at once, fleet-wide.")
@click.option("--clear", is_flag=True, help="Remove the queue's limits.")
@click.pass_context
@friendly_errors
def limit(
    ctx: click.Context, queue: str, rate: str | None, concurrency: int | None, clear: bool
) -> None:
    """Limit a queue across the whole fleet (enforced when jobs are claimed).

    \b
    Example:
      mediapipe limit default --rate 5/1s --concurrency 4
    """
    c = _client(ctx)
    if clear:
        c.set_rate_limit(queue, None)
        c.set_concurrency_limit(queue, None)
    if rate:
        count, _, per = rate.partition("/")
        if not count.isdigit():
            raise SubmissionError(f"--rate must look like 5/1s, not {rate!r}")
        seconds = float(per.rstrip("s") or 1)
        c.set_rate_limit(queue, int(count), per_seconds=seconds)
    if concurrency is not None:
        c.set_concurrency_limit(queue, concurrency)
    meta = as_str_dict(c.redis.hgetall(c.keys.meta(queue)))
    click.echo(f"{queue}: {json.dumps(meta)}")


@main.command()
@click.argument("queue")
@click.pass_context
@friendly_errors
def pause(ctx: click.Context, queue: str) -> None:
    """Stop handing out jobs from QUEUE (running jobs finish).

    \b
    Example:
      mediapipe pause default
    """
    _client(ctx).pause(queue)
    click.echo(f"paused {queue}")


@main.command()
@click.argument("queue")
@click.pass_context
@friendly_errors
def resume(ctx: click.Context, queue: str) -> None:
    """Hand out jobs from QUEUE again.

    \b
    Example:
      mediapipe resume default
    """
    _client(ctx).resume(queue)
    click.echo(f"resumed {queue}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable (docs/json-output.md).")
@click.pass_context
@friendly_errors
def workers(ctx: click.Context, as_json: bool) -> None:
    """The live workers: queues, tags, capacity in use, jobs done and failed.

    \b
    Example:
      mediapipe workers
      mediapipe workers --json
    """
    c = _client(ctx)
    now_ms = liveness.redis_now_ms(c.redis)
    doc = documents.workers(c.worker_beats(), now_ms)
    if as_json:
        click.echo(json.dumps(doc))
        return
    if not doc["workers"]:
        click.echo("no worker is running: start one with `mediapipe worker`")
        return
    for w in doc["workers"]:
        seen = f", seen {liveness.ago(now_ms - w['last_seen_ms'])}" if w["last_seen_ms"] else ""
        click.echo(
            f"{w['id']}  {w['host']} pid {w['pid']}  {w['state']}  "
            f"in use {w['in_use']}/{w['capacity']}  done {w['jobs_done']} "
            f"failed {w['jobs_failed']}  queues {','.join(w['queues']) or '-'}  "
            f"tags {','.join(w['tags']) or '-'}{seen}"
        )


_SOURCES = {
    ParameterSource.COMMANDLINE: "flag",
    ParameterSource.ENVIRONMENT: "env",
    ParameterSource.DEFAULT_MAP: "file",
}


@main.command("config")
@click.pass_context
def config_command(ctx: click.Context) -> None:
    """Where each setting comes from: the config file read, then every global option and
    MEDIAPIPE_* setting with its value and source (flag, env, file or default), then the
    command options the file sets. Precedence: flag > env > file > default.

    \b
    Example:
      mediapipe config
      mediapipe --config fleet.toml config
    """
    root = ctx.find_root()
    loaded: settings.Loaded = root.meta[settings.META]
    click.echo(f"config file: {loaded.path} ({'read' if loaded.found else 'not found'})")
    rows: list[tuple[str, str, str]] = []
    for param in root.command.params:
        key = settings.option_key(param)
        if key is None or param.name is None:
            continue
        found = root.get_parameter_source(param.name)
        value = root.params.get(param.name)
        shown = "-" if value is None else redacted(str(value))
        rows.append((f"--{key}", shown, _SOURCES.get(found, "default") if found else "default"))
    for s in settings.ENV_SETTINGS:
        if s.var in os.environ:
            source = "file" if s.var in loaded.from_file else "env"
            shown = "***" if s.secret else redacted(os.environ[s.var])
            rows.append((s.var, shown, source))
        else:
            rows.append((s.var, s.default, "default"))
    for where, key, value in _file_options(root.command, dict(root.default_map or {}), []):
        rows.append((f"{where} --{key}", redacted(str(value)), "file"))
    width = max(len(r[0]) for r in rows)
    for name, value, source in rows:
        click.echo(f"  {name:{width}}  {value}  ({source})")


def _file_options(
    command: click.Command, table: dict[str, Any], path: list[str]
) -> list[tuple[str, str, Any]]:
    """(command, option, value) for each command option the config file sets."""
    keys = {p.name: settings.option_key(p) for p in command.params}
    subs = command.commands if isinstance(command, click.Group) else {}
    out = []
    for name, value in table.items():
        if isinstance(value, dict) and name in subs:
            out.extend(_file_options(subs[name], value, [*path, name]))
        elif path:
            out.append((" ".join(path), keys.get(name) or name, value))
    return out


def _split(values: tuple[str, ...]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


@main.command()
@click.option(
    "--concurrency",
    default="auto",
    show_default=True,
    help="Initial capacity in slots: a number, or auto for the CPU cores.",
)
@click.option("--min", "min_", type=int, default=1, show_default=True, help="Lowest capacity.")
@click.option("--max", "max_", type=int, default=None, help="Highest capacity (default: initial).")
@click.option(
    "--queues",
    multiple=True,
    default=("default",),
    show_default=True,
    help="Queues to take jobs from, in order (repeat or comma-separate).",
)
@click.option("--tags", multiple=True, help="Capabilities of this box, e.g. gpu,nvenc.")
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds running jobs get to finish after SIGTERM.",
)
@click.option(
    "--lease",
    type=float,
    default=30.0,
    show_default=True,
    help="Lease length in seconds; renewed while a job runs.",
)
@click.option("--import", "imports", multiple=True, help="Extra module(s) that register stages.")
@click.option("--no-adaptive", is_flag=True, help="Keep the capacity fixed.")
@click.option("--no-gpu", is_flag=True, help="Ignore any GPU on this box.")
@click.option("--gpus", default=None, help="Use only these GPU indices, e.g. 0,1.")
@click.option(
    "--show-capabilities",
    is_flag=True,
    help="Print the GPUs and capabilities found (and why), then exit.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    envvar="MEDIAPIPE_METRICS_PORT",
    help="Serve /metrics, /healthz and /readyz on this port.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address for the metrics port (localhost unless told otherwise).",
)
@click.option(
    "--log-level",
    envvar="MEDIAPIPE_LOG_LEVEL",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="mediapipe's own lines from this level up; INFO: one line per job start and end.",
)
@click.option(
    "--log-format",
    envvar="MEDIAPIPE_LOG_FORMAT",
    type=click.Choice(FORMATS, case_sensitive=False),
    default=None,
    help="plain, or json: one object per line with the job's fields as keys. "
    "Default: the global --log-format, else plain.",
)
@click.option(
    "--debug",
    is_flag=True,
    help="Everything at DEBUG, libraries' lines too (pyvips, filelock, urllib3...).",
)
@click.pass_context
@friendly_errors
def worker(
    ctx: click.Context,
    concurrency: str,
    min_: int,
    max_: int | None,
    queues: tuple[str, ...],
    tags: tuple[str, ...],
    grace: float,
    lease: float,
    imports: tuple[str, ...],
    no_adaptive: bool,
    log_level: str,
    log_format: str | None,
    debug: bool,
    metrics_port: int | None,
    metrics_host: str,
    no_gpu: bool,
    gpus: str | None,
    show_capabilities: bool,
) -> None:
    """Run a worker node: a pool of processes sized to the cores.

    \b
    Example:
      MEDIAPIPE_REDIS_URL=redis://queue-host:6379 mediapipe worker --tags gpu
    """
    # A box loads the media stages and the worker node (libvips, PyAV, psutil) that the
    # other commands do without.
    from mediajobs.worker_box import BoxSpec, assemble, capabilities

    _log_as(log_format or ctx.obj["log_format"], "DEBUG" if debug else log_level, debug)
    if concurrency != "auto" and not concurrency.isdigit():
        raise SubmissionError(f"--concurrency must be auto or a number, not {concurrency!r}")
    spec = BoxSpec(
        queues=tuple(_split(queues)),
        tags=tuple(_split(tags)),
        imports=imports,
        concurrency=None if concurrency == "auto" else int(concurrency),
        min=min_,
        max=max_,
        adaptive=not no_adaptive,
        grace=grace,
        lease=lease,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        use_gpus=not no_gpu,
        only_gpus=tuple(int(g) for g in gpus.split(",") if g.strip()) if gpus else None,
    )
    caps = capabilities(spec)
    if show_capabilities:
        click.echo(caps.describe())
        return
    sys.exit(assemble(ctx.obj["url"], ctx.obj["namespace"], spec, caps).run())


@main.command()
# A path type: shell completion offers file names (no check here: planning says what is wrong).
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--preset", default="auto", show_default=True, help="auto, image, video, or a preset TOML file."
)
@click.option(
    "--out",
    "out_root",
    default="mediapipe-out",
    show_default=True,
    help="Output folder (one subfolder per input), or s3://bucket/prefix.",
)
@click.option(
    "--s3-endpoint",
    default=None,
    help="S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL, else AWS).",
)
@click.option(
    "--stage",
    "stage_to",
    default=None,
    metavar="s3://BUCKET/PREFIX",
    envvar="MEDIAPIPE_STAGE",
    help="Upload inputs there for a fleet that cannot read this disk; a local --out is "
    "then fetched back.",
)
@click.option(
    "--priority", type=int, default=0, show_default=True, help="Higher runs first (-1000..1000)."
)
@click.option(
    "--wait/--no-wait",
    default=None,
    help="Follow the DAGs until done (default: wait when running locally).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per input on stdout (a list for several).",
)
@click.option(
    "--redis",
    "redis_url",
    default=None,
    help="Redis URL: enqueue for a fleet (as the global --redis; prefer MEDIAPIPE_REDIS_URL).",
)
@click.option(
    "--idempotency-key",
    default=None,
    help="Re-submitting the same input with the same key returns the same DAG.",
)
@click.option(
    "--webhook",
    default=None,
    metavar="URL",
    callback=_webhook,
    help="POST a signed event to URL when each DAG ends (docs/webhooks.md).",
)
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help="Local pool size in embedded mode (default: the CPU cores).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Embedded mode: serve the local pool's /metrics, /healthz, /readyz on this port.",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Log the local pool's jobs: one line per job start and end (embedded mode).",
)
@click.option(
    "--debug",
    is_flag=True,
    help="Show tracebacks and every log line at DEBUG, libraries' included.",
)
@click.pass_context
def submit(
    ctx: click.Context,
    paths: tuple[str, ...],
    preset: str,
    out_root: str,
    priority: int,
    wait: bool | None,
    as_json: bool,
    redis_url: str | None,
    idempotency_key: str | None,
    webhook: str | None,
    concurrency: int | None,
    verbose: bool,
    debug: bool,
    s3_endpoint: str | None,
    metrics_port: int | None,
    stage_to: str | None,
) -> None:
    """Turn media files into renditions and a manifest.json.

    \b
    Example:
      mediapipe submit photo.jpg video.mp4 --out renditions/
      MEDIAPIPE_REDIS_URL=redis://queue:6379 mediapipe submit big.mov --wait
    """
    # The use case loads the media stages (libvips, PyAV) that the other commands do without.
    from mediajobs.planning import OutcomeStatus
    from mediajobs.submit import RedisLost, SubmitOptions, exit_code, summary_lines
    from mediajobs.submit import run as run_submit
    from stages.outbound import shown_url

    _log_as(ctx.obj["log_format"], "DEBUG" if debug else "INFO" if verbose else "WARNING", debug)
    warn_if_secret_on_argv(ctx, "redis_url", redis_url, "MEDIAPIPE_REDIS_URL or --redis-file")
    url = redis_url or ctx.obj["url"]
    options = SubmitOptions(
        preset=preset,
        out=out_root,
        endpoint=s3_endpoint,
        priority=priority,
        idempotency_key=idempotency_key,
        webhook=webhook,
        url=url,
        namespace=ctx.obj["namespace"],
        wait=wait,
        concurrency=concurrency,
        metrics_port=metrics_port,
        quiet=as_json,
        stage=stage_to,
    )
    try:
        outcomes = run_submit(list(paths), options, _SubmitLines())
    except RedisLost as exc:
        click.echo(f"mediapipe: {redacted(str(exc))}", err=True)
        if as_json and any(o.dag_id for o in exc.outcomes):
            _print_json(exc.outcomes)
        sys.exit(ExitCode.REDIS_UNAVAILABLE)
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"mediapipe: {type(exc).__name__}: {exc} (rerun with --debug for details)", err=True
        )
        sys.exit(ExitCode.FAILED)
    code = exit_code(outcomes)
    if code is ExitCode.INTERRUPTED:
        sys.exit(code)
    if url is None and wait is False and any(o.dag_id for o in outcomes):
        # Queued on the embedded server, which outlives this command; nothing runs them
        # until a worker does.
        click.echo(
            "mediapipe: queued on the embedded server: `mediapipe worker` runs them "
            "(submit without --no-wait runs them here)",
            err=True,
        )
    if not wait and (url is not None or wait is False):
        if as_json:
            _print_json(outcomes)
        else:
            for o in outcomes:
                if o.dag_id:
                    click.echo(f"{o.dag_id}  {shown_url(o.uri) if o.uri else o.path}")
        sys.exit(code)
    for o in outcomes:
        # Rejected before anything was queued: said already. Rejected by the probe on a
        # worker (an input only the workers read): said now.
        already = o.status is OutcomeStatus.REJECTED and o.dag_id is None
        if o.status is not OutcomeStatus.COMPLETED and not already:
            said = o.error or "failed"
            click.echo(f"mediapipe: {said if o.uri else _with_path(said, o.path)}", err=True)
    if as_json:
        _print_json(outcomes)
    else:
        for line in summary_lines(outcomes):
            click.echo(line)
    sys.exit(code)


def _log_as(fmt: str | None, level: str, debug: bool) -> None:
    try:
        configure_logging(level, fmt, libraries="DEBUG" if debug else None)
    except ValueError as exc:  # a bad MEDIAPIPE_LOG_FORMAT read by configure_logging
        raise click.UsageError(str(exc)) from None


class _SubmitLines:
    """What ``submit`` says on stderr as it goes."""

    def refused(self, message: str) -> None:
        click.echo(f"mediapipe: {message}", err=True)

    def rejected(self, outcome: Outcome) -> None:
        said = outcome.error or "rejected"
        # A URL's errors name it already (its password hidden): never print it raw.
        click.echo(
            f"mediapipe: {said if outcome.uri else _with_path(said, outcome.path)}", err=True
        )

    def following(self, outcome: Outcome) -> None:
        # Said before following, so a follower that gives up (or is killed) leaves the
        # user what they need to re-attach with `mediapipe watch`.
        from stages.outbound import shown_url

        named = shown_url(outcome.uri) if outcome.uri else outcome.path
        click.echo(f"mediapipe: submitted {outcome.dag_id}  {named}", err=True)


def _with_path(message: str, path: object) -> str:
    """``message`` naming the input once: as is when it names the input already, as typed
    or as the absolute path the stages were given."""
    named = {str(path), str(Path(str(path)).resolve())}
    return message if any(n in message for n in named) else f"{path}: {message}"


def _print_json(outcomes: list[Outcome]) -> None:
    from mediajobs.submit import as_json

    docs = [as_json(o) for o in outcomes]
    click.echo(json.dumps(docs[0] if len(docs) == 1 else docs))
