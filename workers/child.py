"""The code that runs inside a pool child process.

A child owns no Redis connection: it receives a job over its pipe, runs the stage
function, and sends back progress, fan-out requests and the outcome. It can therefore be
killed at any moment (timeout, shutdown) without leaving anything half-done in Redis.
"""

from __future__ import annotations

import importlib
import os
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any

from pipeline.context import JobContext, running
from pipeline.errors import PermanentError
from pipeline.jobs import ClaimedJob, encode_result
from pipeline.logsetup import LogSettings, apply
from pipeline.model import Dag
from workers import wire
from workers.outcomes import Failure

_functions: dict[str, Any] = {}


def resolve(ref: str) -> Any:
    """A stage function from its ``module:qualname`` reference (imported once per child)."""
    fn = _functions.get(ref)
    if fn is None:
        module, _, qualname = ref.partition(":")
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        fn = _functions[ref] = obj
    return fn


class PipeReporter:
    """The child's side of JobContext: forwards to the parent process over the pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def progress(self, job: ClaimedJob, percent: float, message: str = "", **fields: Any) -> None:
        wire.send(self.conn, "progress", job.id, percent, message, fields)

    def check_service(self, job: ClaimedJob, service: str) -> float:
        """Seconds to wait before using ``service`` (0: go), as the parent's breaker says."""
        wire.send(self.conn, "check_service", job.id, service)
        reply = self.conn.recv()
        return float(reply[1])

    def temp_created(self, job: ClaimedJob, path: str) -> None:
        # Sent before the file exists: when the parent kills this process, it knows every
        # temporary output the job had started and removes them.
        wire.send(self.conn, "temp", job.id, path)

    def add_children(self, job: ClaimedJob, sub: Dag) -> int:
        wire.send(self.conn, "add_children", job.id, wire.dag_to_wire(sub))
        reply = self.conn.recv()
        if reply[0] == "error":
            raise PermanentError(reply[1])
        return int(reply[1])


def child_main(conn: Connection, preload: list[str], log: LogSettings | None = None) -> None:
    # The parent decides when a job stops: Ctrl-C in a terminal reaches the whole process
    # group, and a child must not die on it before the parent hands its job back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log is not None:
        apply(log)  # the parent's levels and format; a no-op after a fork start
    for module in preload:
        importlib.import_module(module)
    reporter = PipeReporter(conn)
    wire.send(conn, "ready", os.getpid())
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        ref, job = msg
        try:
            fn = resolve(ref)
            with running(JobContext(job, reporter)) as ctx:
                result = fn(ctx, job.params, job.inputs)
        except BaseException as exc:  # the parent decides retry vs dead from the class
            _send_error(conn, job, exc, traceback.format_exc())
            continue
        try:
            body = encode_result(job.stage, result)
        except PermanentError as bad:
            _send_error(conn, job, bad, "")
            continue
        wire.send(conn, "done", job.id, str(body))


def _send_error(conn: Connection, job: ClaimedJob, exc: BaseException, tb: str) -> None:
    # What the error's class decided travels, not only its name (see workers/outcomes.py).
    wire.send(conn, "error", job.id, Failure.of(exc, tb).to_json())
