"""``mediapipe dashboard``: a small web app over the namespace's queues, workers, DAGs,
dead-letter queue and schedules, with token-protected actions.

Only click is imported here, so the CLI can register the command without loading Flask;
the app is imported when the command runs.
"""

from __future__ import annotations

import secrets
import sys

import click

__all__ = ["dashboard_command"]

EXIT_REJECTED, EXIT_REDIS = 2, 3  # as pipeline.cli: usage rejected, Redis unreachable


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
        help="Token for actions (retry, cancel, pause, purge). Default: a random one, printed.",
    )
    @click.pass_context
    def dashboard(ctx: click.Context, host: str, port: int, token: str | None) -> None:
        """Serve a live web dashboard: queues, workers, DAG graphs, the dead-letter queue.

        \b
        Example:
          mediapipe dashboard                  # prints http://127.0.0.1:8080/#token=...
          MEDIAPIPE_DASHBOARD_TOKEN=s3cret mediapipe dashboard --port 9000
        """
        import logging

        from pipeline.client import Client
        from pipeline.dashboard.app import create_app, is_loopback, make_dashboard_server
        from pipeline.errors import RedisUnavailableError

        # Actions are logged (an audit trail); werkzeug's line per request is not, since
        # every open page polls once a second.
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        obj = ctx.find_root().obj or {}
        namespace = obj.get("namespace", "mp")
        try:
            client = Client.connect(obj.get("url"), namespace=namespace)
        except RedisUnavailableError as exc:
            click.echo(f"mediapipe: {exc}", err=True)
            sys.exit(EXIT_REDIS)
        generated = not token
        token = token or secrets.token_urlsafe(24)
        try:
            server = make_dashboard_server(create_app(client, token=token, host=host), host, port)
        except OSError as exc:
            click.echo(f"mediapipe: cannot listen on {host}:{port}: {exc.strerror}", err=True)
            sys.exit(EXIT_REJECTED)
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
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()

    return dashboard
