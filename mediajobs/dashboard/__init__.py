"""``mediapipe dashboard``: a small web app over the namespace's queues, workers, DAGs,
dead-letter queue and schedules, with token-protected actions.

Flask is not imported here, so the CLI can register the command without loading it; the
app is imported when the command runs.
"""

from __future__ import annotations

import logging
import secrets
import sys
import threading
import time
from pathlib import Path

import click
from click.core import ParameterSource
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.client import Client
from pipeline.connection import connect, redacted
from pipeline.errors import ExitCode, RedisUnavailableError
from pipeline.logsetup import configure_logging
from pipeline.outage import SERVICE_GIVE_UP, Outage

__all__ = ["dashboard_command"]


def dashboard_command() -> click.Command:
    """The ``dashboard`` command; the CLI registers it with ``main.add_command``."""

    @click.command("dashboard")
    @click.option(
        "--host",
        default="127.0.0.1",
        show_default=True,
        help="Address to bind. Anything but loopback also makes reads need the token.",
    )
    @click.option("--port", type=int, default=8080, show_default=True, help="0 picks a free one.")
    @click.option(
        "--token",
        envvar="MEDIAPIPE_DASHBOARD_TOKEN",
        default=None,
        help="Token for actions (retry, cancel, pause, purge, drain, stop), best given as "
        "$MEDIAPIPE_DASHBOARD_TOKEN or --token-file: on the command line it shows in ps. "
        "Default: a random one, printed.",
    )
    @click.option(
        "--token-file",
        envvar="MEDIAPIPE_DASHBOARD_TOKEN_FILE",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Read the token from this file (first line), e.g. a mounted secret.",
    )
    @click.pass_context
    def dashboard(
        ctx: click.Context, host: str, port: int, token: str | None, token_file: Path | None
    ) -> None:
        """Serve a live web dashboard: queues, workers, DAG graphs, the dead-letter queue.

        \b
        Example:
          mediapipe dashboard                  # prints http://127.0.0.1:8080/#token=...
          mediapipe dashboard --port 9000 --token-file /run/secrets/dashboard-token
        """
        if token_file is not None:
            token = _token_from(token_file)
        elif token and ctx.get_parameter_source("token") is ParameterSource.COMMANDLINE:
            # Any local user can read argv (ps, /proc); say so rather than refuse it.
            click.echo(
                "mediapipe: warning: --token shows in ps; use MEDIAPIPE_DASHBOARD_TOKEN "
                "or --token-file",
                err=True,
            )
        # Flask loads only when the dashboard runs.
        from mediajobs.dashboard.app import create_app, is_loopback, make_dashboard_server

        # Actions are logged (an audit trail); werkzeug's line per request is not, since
        # every open page reads its data each second while jobs run.
        configure_logging(logging.INFO)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        obj = ctx.find_root().obj or {}
        namespace = obj.get("namespace", "mp")
        # A service: it waits for Redis at start and through outages (serving 503s
        # meanwhile) unless MEDIAPIPE_REDIS_GIVE_UP says how long.
        outage = Outage(default_give_up=SERVICE_GIVE_UP)
        try:
            client = _client(obj.get("url"), namespace, outage)
        except RedisUnavailableError as exc:
            click.echo(redacted(f"mediapipe: {exc}"), err=True)
            sys.exit(ExitCode.REDIS_UNAVAILABLE)
        generated = not token
        token = token or secrets.token_urlsafe(24)
        try:
            server = make_dashboard_server(create_app(client, token=token, host=host), host, port)
        except OSError as exc:
            click.echo(f"mediapipe: cannot listen on {host}:{port}: {exc.strerror}", err=True)
            sys.exit(ExitCode.BAD_INPUT)
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{server.port}/"
        # The token travels in the URL fragment, which browsers never send to the server
        # (so it stays out of access logs and Referer headers); the page moves it to
        # sessionStorage and strips it from the address bar.
        if generated:
            click.echo(f"dashboard for namespace {namespace}: {url}#token={token}")
        else:
            click.echo(f"dashboard for namespace {namespace}: {url}#token=<your token>")
        if not is_loopback(host):
            click.echo("warning: not bound to loopback; every request needs the token", err=True)
        sys.stdout.flush()
        serving = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
        serving.start()
        try:
            # The one place that watches Redis: requests only answer 503 while it is down.
            while serving.is_alive():
                outage.call(client.redis.ping)
                time.sleep(1.0)
        except RedisUnavailableError as exc:
            click.echo(redacted(f"mediapipe: {exc}"), err=True)
            sys.exit(ExitCode.REDIS_UNAVAILABLE)
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            server.server_close()

    return dashboard


def _token_from(path: Path) -> str:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror}"
        raise click.BadParameter(message, param_hint="--token-file") from None
    if not lines or not lines[0].strip():
        raise click.BadParameter(f"{path} is empty", param_hint="--token-file")
    return lines[0].strip()


def _client(url: str | None, namespace: str, outage: Outage) -> Client:
    """Socket timeouts and a single quick retry: a request made while Redis is down gets
    its 503 at once instead of hanging in redis-py's backoff. Made through ``outage``:
    a client loads the transitions into Redis."""
    r = connect(
        url,
        check=False,
        namespace=namespace,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 1),
    )
    return outage.call(lambda: Client(r, namespace=namespace))
