"""The Lua scripts, one per state transition, loaded once per connection.

Each ``<name>.lua`` file may pull shared fragments from ``includes/`` with a
``--@include file.lua`` line; they are inlined here so Redis sees one self-contained
script. redis-py's ``Script`` calls EVALSHA and reloads on NOSCRIPT, so a Redis restart
(which forgets loaded scripts) is handled transparently.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

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
)

_INCLUDE = re.compile(r"^--@include (\S+)$", re.MULTILINE)


@cache
def source(name: str) -> str:
    """The script's full text with its includes inlined (each at most once)."""
    root = resources.files(__package__)
    seen: set[str] = set()

    def inline(match: re.Match[str]) -> str:
        inc = match.group(1)
        if inc in seen:
            return ""
        seen.add(inc)
        text = root.joinpath("includes", inc).read_text()
        return _INCLUDE.sub(inline, text)

    return _INCLUDE.sub(inline, root.joinpath(name + ".lua").read_text())


class Scripts:
    """Registered scripts for one Redis client; call ``scripts.claim(prefix, *args)``."""

    def __init__(self, client: redis.Redis) -> None:
        self._scripts: dict[str, Script] = {
            name: client.register_script(source(name)) for name in TRANSITIONS
        }

    def run(self, name: str, prefix: str, *args: Any, client: Any = None) -> Any:
        return self._scripts[name](keys=[prefix], args=list(args), client=client)
