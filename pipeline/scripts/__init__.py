"""The Lua transitions, one file per state change, run atomically inside Redis.

Each ``<name>.lua`` holds the body of one transition; shared fragments live in
``includes/`` and are pulled in with ``--@include file.lua`` lines.

On Redis >= 7 and Valkey the transitions are loaded once as a function library
(``FUNCTION LOAD``) and called with ``FCALL``: the helpers are defined once at load time
instead of on every call, which measured 5 us per call against 38 us for the same code
through EVALSHA. On Redis 6.2, which has no functions, each transition runs as a script
through EVALSHA. The library name carries a hash of the source, so two versions of
mediapipe can share one Redis during a rolling upgrade, and a server that lost its
functions (restart without persistence) gets them back on the next call.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from functools import cache
from importlib import resources
from typing import Any

import hiredis
import redis
from redis.commands.core import Script

TRANSITIONS = (
    "submit_dag",
    "claim",
    "extend_lease",
    "report_progress",
    "complete",
    "fail",
    "promote_delayed",
    "reclaim_stalled",
    "cancel_dag",
    "retry_dead",
    "pause_queue",
    "resume_queue",
    "add_children",
    "prune",
    "release_jobs",
    "worker_heartbeat",
    "service_gate",
    "service_outcome",
    "throttle_queue",
    "reroute_orphans",
    "claim_tick",
)

_INCLUDE = re.compile(r"^--@include (\S+)\n?", re.MULTILINE)
_PRELUDE = "P = KEYS[1]\n"


def _read(*parts: str) -> str:
    return resources.files(__package__).joinpath(*parts).read_text()


def _includes_of(text: str) -> list[str]:
    """Includes in dependency order (depth first, each once)."""
    out: list[str] = []
    for inc in _INCLUDE.findall(text):
        for sub in [*_includes_of(_read("includes", inc)), inc]:
            if sub not in out:
                out.append(sub)
    return out


def _body(name: str) -> str:
    return _INCLUDE.sub("", _read(name + ".lua"))


@cache
def source(name: str) -> str:
    """One transition as a self-contained script (the EVALSHA path)."""
    text = _read(name + ".lua")
    includes = "".join(_INCLUDE.sub("", _read("includes", i)) for i in _includes_of(text))
    return includes + _PRELUDE + _body(name)


@cache
def library() -> tuple[str, str]:
    """(library source, function-name prefix) for FUNCTION LOAD."""
    names: list[str] = []
    for t in TRANSITIONS:
        for inc in _includes_of(_read(t + ".lua")):
            if inc not in names:
                names.append(inc)
    includes = "".join(_INCLUDE.sub("", _read("includes", i)) for i in names)
    bodies = "".join(_body(t) for t in TRANSITIONS)
    digest = hashlib.sha1((includes + bodies).encode()).hexdigest()[:10]
    prefix = f"mp_{digest}_"
    parts = [f"#!lua name=mediapipe_{digest}\n", includes]
    for t in TRANSITIONS:
        parts.append(
            f"redis.register_function('{prefix}{t}', function(KEYS, ARGV)\n"
            f"{_PRELUDE}{_body(t)}end)\n"
        )
    return "".join(parts), prefix


class Scripts:
    """The transitions for one Redis client: ``scripts.run("claim", prefix, *args)``."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._lib, self._prefix = library()
        self._functions = self._load_library()
        self._scripts: dict[str, Script] = {}
        self._local = threading.local()
        if not self._functions:
            self._scripts = {t: client.register_script(source(t)) for t in TRANSITIONS}

    def _load_library(self) -> bool:
        try:
            self._client.function_load(self._lib)
        except redis.ResponseError as exc:
            msg = str(exc).lower()
            if "already exists" in msg:
                return True
            if "unknown command" in msg:
                return False  # Redis 6.2: scripts only
            raise
        return True

    def run(self, name: str, prefix: str, *args: Any, client: Any = None) -> Any:
        if not self._functions:
            return self._scripts[name](keys=[prefix], args=list(args), client=client)
        if client is not None:  # a pipeline: queued, sent with the others
            return client.fcall(self._prefix + name, 1, prefix, *args)
        try:
            return self._fcall(self._prefix + name, prefix, args)
        except redis.ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
            self._load_library()  # the server restarted without its functions
            return self._fcall(self._prefix + name, prefix, args)

    def _fcall(self, function: str, prefix: str, args: tuple[Any, ...]) -> Any:
        """FCALL on this thread's own connection.

        The transitions are the hot path (a busy worker makes one call per job), and
        ``Redis.execute_command`` costs 18 us of client CPU per call here against 6 us
        for the same command sent on a held connection (pool checkout and release,
        instrumentation hooks). A broken connection falls back to ``execute_command``,
        which reconnects and retries as every other command does.
        """
        conn = self._held_connection()
        try:
            conn.send_packed_command([hiredis.pack_command(("FCALL", function, 1, prefix, *args))])
            return conn.read_response()
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()
            return self._client.fcall(function, 1, prefix, *args)

    def _held_connection(self) -> Any:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # never share a socket across fork
            local.conn = self._client.connection_pool.make_connection()
            local.pid = os.getpid()
        return local.conn

    def ensure_loaded(self) -> None:
        """Load the library again if the server lost it (before a pipeline of calls)."""
        if self._functions:
            self._load_library()
