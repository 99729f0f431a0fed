"""The dashboard's web app: a JSON API over ``Snapshots`` plus one static page.

Security model (see docs/dashboard.md):

- Every POST (retry, cancel, pause, resume, purge, drain or stop a worker) needs the
  token, as ``Authorization: Bearer <token>`` or a ``token`` form field; 401 without one,
  403 for a wrong one. Reads (the API and output files) are open while the app is bound
  to a loopback address and need the token too when it is bound anywhere else.
- Requests whose ``Host`` header is not a loopback name are refused while bound to
  loopback, so a web page on another site cannot reach the API through DNS rebinding.
- The page builds its DOM with ``textContent`` only and is served with a strict Content
  Security Policy, so names and error messages (which hold user file names) cannot inject
  markup or script.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import mimetypes
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from flask import (
    Flask,
    Response,
    abort,
    jsonify,
    request,
    send_file,
    send_from_directory,
    stream_with_context,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

from mediajobs.dashboard.job_detail import output_file, read_job
from mediajobs.dashboard.listings import charts, dag_page, job_page
from mediajobs.dashboard.live import follow
from mediajobs.dashboard.snapshot import Snapshots
from pipeline.client import Client
from pipeline.errors import SubmissionError
from pipeline.worker_beat import WorkerBeat
from pipeline.worker_control import DRAIN, STOP, ask

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
Handler = Callable[[str], Any]
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(client: Client, *, token: str, host: str = "127.0.0.1") -> Flask:
    """The app for one namespace; ``host`` is the address it will be bound to."""
    if not token:
        raise ValueError("the dashboard needs a non-empty token")
    expected = token.encode()
    local = is_loopback(host)
    snapshots = Snapshots(client)
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")

    def authorized() -> Response | None:
        """None when the request carries the token, else the refusal to send."""
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header.startswith("Bearer ") else ""
        if not given:
            given = request.form.get("token", "")
        if not given:
            return _error(401, "the dashboard token is required")
        if not hmac.compare_digest(given.encode(), expected):
            log.warning("dashboard: wrong token from %s for %s", request.remote_addr, request.path)
            return _error(403, "wrong dashboard token")
        return None

    @app.before_request
    def guard() -> Response | None:
        if local and _hostname(request.host) not in LOOPBACK_NAMES:
            return _error(400, "this dashboard only answers to localhost")
        data = request.path.startswith(("/api/", "/files/"))
        if request.method == "POST" or (not local and data):
            return authorized()
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        # Output files keep theirs: a thumbnail is not fetched again on every redraw.
        if not request.path.startswith("/files/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> Response:
        # Unreachable is said once per outage by the command's watch on Redis, not once
        # per request (every open page reads each second while jobs run).
        unreachable = isinstance(exc, redis.ConnectionError | redis.TimeoutError)
        (log.debug if unreachable else log.warning)("dashboard: redis error: %s", exc)
        return _error(503, f"Redis unavailable: {type(exc).__name__}")

    @app.errorhandler(SubmissionError)
    def rejected(exc: SubmissionError) -> Response:
        return _error(409, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        if (exc.code or 500) < 400:  # routing redirects keep their Location header
            return exc.get_response()
        return _error(exc.code or 500, exc.description or exc.name)

    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC, "index.html")

    @app.get("/api/overview")
    def overview() -> Response:
        return jsonify({**snapshots.overview(), "reads_need_token": not local})

    @app.get("/api/dags/<path:dag_id>")
    def dag(dag_id: str) -> Response:
        d = snapshots.dag(dag_id)
        if d is None:
            abort(404, f"unknown DAG {dag_id}")
        return jsonify(d)

    @app.get("/api/dags")
    def dag_list() -> Response:
        args = request.args
        try:
            page = dag_page(
                client.redis,
                client.keys,
                state=args.get("state", ""),
                query=args.get("q", ""),
                page=args.get("page", 1),
                per_page=args.get("per_page", 25),
                now_ms=snapshots.now_ms(),
            )
        except ValueError as exc:
            abort(400, str(exc))
        return jsonify(page)

    @app.get("/api/jobs")
    def job_list() -> Response:
        args = request.args
        try:
            page = job_page(
                client.redis,
                client.keys,
                client.queues(),
                state=args.get("state", "active"),
                queue=args.get("queue", ""),
                page=args.get("page", 1),
                per_page=args.get("per_page", 25),
                now_ms=snapshots.now_ms(),
            )
        except ValueError as exc:
            abort(400, str(exc))
        return jsonify(page)

    @app.get("/api/jobs/<path:job_id>")
    def job(job_id: str) -> Response:
        j = read_job(client.redis, client.keys, job_id)
        if j is None:
            abort(404, f"unknown job {job_id}")
        return jsonify(j)

    @app.get("/files/<path:job_id>/<int:index>")
    def output(job_id: str, index: int) -> Response:
        """An output file of a job, only when it lies inside its DAG's out_dir."""
        path = output_file(client.redis, client.keys, job_id, index)
        if path is None:
            abort(404, "no such output file inside the DAG's output folder")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        media = kind.split("/")[0] in ("image", "video", "audio")
        # Media open in the browser; anything else (a playlist, a manifest) downloads.
        resp = send_file(path, mimetype=kind, as_attachment=not media, conditional=True)
        resp.headers["Cache-Control"] = "private, max-age=60"
        return resp

    @app.get("/api/charts")
    def chart_data() -> Response:
        return jsonify(charts(client.redis, client.keys, snapshots.now_ms(), snapshots.job_rates))

    @app.get("/api/live")
    def live() -> Response:
        stream = stream_with_context(follow(client.redis, client.keys))
        return Response(stream, mimetype="text/event-stream", headers={"X-Accel-Buffering": "no"})

    def action(path: str, field: str | None) -> Callable[[Handler], Handler]:
        """Register POST ``path``; the handler gets the named body field, checked present."""

        def register(fn: Handler) -> Handler:
            def view() -> Response:
                value = _field(field) if field else ""
                result = fn(value)
                log.info("dashboard: %s %s from %s", path, value, request.remote_addr)
                return jsonify({"ok": True, field or "result": value, "result": result})

            app.add_url_rule(path, endpoint=path, view_func=view, methods=["POST"])
            return fn

        return register

    @action("/api/dlq/retry", "job")
    def retry(job: str) -> None:
        client.retry_dead(job)

    @action("/api/dlq/retry-all", None)
    def retry_all(_: str) -> int:
        return client.retry_all_dead()

    @action("/api/dlq/purge", None)
    def purge(_: str) -> int:
        return client.purge_dead()

    @action("/api/dags/cancel", "dag")
    def cancel(dag_id: str) -> dict[str, int]:
        if client.dag_state(dag_id) is None:
            abort(404, f"unknown DAG {dag_id}")
        cancelled, running = client.cancel(dag_id)
        return {"cancelled": cancelled, "told_to_stop": running}

    def known_queue(queue: str) -> str:
        if queue not in client.queues():
            abort(404, f"unknown queue {queue}")
        return queue

    @action("/api/queues/pause", "queue")
    def pause(queue: str) -> None:
        client.pause(known_queue(queue))

    @action("/api/queues/resume", "queue")
    def resume(queue: str) -> None:
        client.resume(known_queue(queue))

    def live_worker(worker_id: str) -> WorkerBeat:
        beat = next((w for w in client.worker_beats() if w.id == worker_id), None)
        if beat is None:
            abort(404, f"no live worker {worker_id}")
        if beat.lane:
            abort(409, f"{worker_id} is a batch lane: it stops with the worker node on {beat.host}")
        return beat

    @action("/api/workers/drain", "worker")
    def drain(worker_id: str) -> dict[str, Any]:
        beat = live_worker(worker_id)
        ask(client.redis, client.keys, worker_id, DRAIN)
        return {"host": beat.host, "pid": beat.pid, "running": beat.in_use}

    @action("/api/workers/stop", "worker")
    def stop(worker_id: str) -> dict[str, Any]:
        beat = live_worker(worker_id)
        ask(client.redis, client.keys, worker_id, STOP)
        return {"host": beat.host, "pid": beat.pid, "running": beat.in_use}

    return app


def _hostname(host: str) -> str:
    """The name in a Host header without its port ('' when malformed)."""
    try:
        return urlsplit("//" + host).hostname or ""
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return ""


def _field(name: str) -> str:
    """A required string field from a JSON body or a form."""
    body = request.get_json(silent=True)
    value = body.get(name) if isinstance(body, dict) else request.form.get(name)
    if not isinstance(value, str) or not value:
        abort(400, f"missing {name!r}")
    return value


def _error(status: int, message: str) -> Response:
    resp = jsonify({"ok": False, "error": message})
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="mediapipe dashboard"'
    return resp


def make_dashboard_server(app: Flask, host: str, port: int) -> BaseWSGIServer:
    """A threaded WSGI server (port 0 picks a free one; ``.port`` says which).

    Werkzeug's server is enough for a handful of operators (each open page holds one
    thread for its event stream); put a production WSGI server in front for anything
    more. The socket is bound here because werkzeug prints and exits on a busy port; this
    raises OSError for the caller instead.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    try:
        return make_server(host, port, app, threaded=True, fd=sock.fileno())
    finally:
        sock.close()  # the server holds its own duplicate of the descriptor
