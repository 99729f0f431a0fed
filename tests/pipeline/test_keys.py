"""Key names have one schema: the Lua scripts' k_<name> functions (scripts/includes/common.lua)
build exactly the names pipeline/keys.py builds, checked by running them in the real server."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from typing import Any

import redis

from pipeline.keys import Keys

# Each Lua key function and the Keys method of the same meaning. A new k_ function in
# common.lua fails the test below until its Python twin is named here.
MIRRORS: dict[str, Callable[[Keys, str], str]] = {
    "seq": lambda k, _: k.seq,
    "events": lambda k, _: k.events,
    "dead": lambda k, _: k.dead,
    "queues": lambda k, _: k.queues,
    "dags_done": lambda k, _: k.dags_done,
    "dags_failed": lambda k, _: k.dags_failed,
    "dags_building": lambda k, _: k.dags_building,
    "workers": lambda k, _: k.workers,
    "worker": Keys.worker,
    "request": Keys.request,
    "job": Keys.job,
    "progress": Keys.job_progress,
    "parents": Keys.job_parents,
    "deps": Keys.job_deps,
    "results": Keys.job_results,
    "dag": Keys.dag,
    "dag_jobs": Keys.dag_jobs,
    "dag_events": Keys.dag_events,
    "dag_leaves": Keys.dag_leaves,
    "wait": Keys.wait,
    "delayed": Keys.delayed,
    "active": Keys.active,
    "meta": Keys.meta,
    "marker": Keys.marker,
    "rate": Keys.rate,
    "retention": lambda k, _: k.retention,
    "idem": Keys.idempotency,
    "schedules": lambda k, _: k.schedules,
    "schedule_last": Keys.schedule_last,
    "staged": lambda k, _: k.staged,
    "staged_users": Keys.staged_users,
    "staged_deleting": Keys.staged_deleting,
    "breaker": Keys.breaker,
    "service_rate": Keys.service_rate,
}

_K_FUNCTION = re.compile(r"^local function k_(\w+)\((\w*)\)", re.MULTILINE)
SCRIPTS = resources.files("pipeline.scripts")


def _common() -> str:
    return SCRIPTS.joinpath("includes", "common.lua").read_text()


def test_every_lua_key_function_builds_the_name_keys_py_builds(r: redis.Redis) -> None:
    functions = _K_FUNCTION.findall(_common())
    assert sorted(name for name, _ in functions) == sorted(MIRRORS)
    # An argument with every character an id may hold, so no part of a name is lost.
    arg = "Job-1.a_b"
    calls = "".join(
        f"out[#out + 1] = k_{name}({'ARGV[1]' if param else ''})\n" for name, param in functions
    )
    script = f"{_common()}\nP = KEYS[1]\nlocal out = {{}}\n{calls}return out\n"
    for namespace in ("mp", "tenant-2.b"):
        keys = Keys(namespace)
        names: Any = r.eval(script, 1, keys.prefix, arg)
        from_lua = {name: got.decode() for (name, _), got in zip(functions, names, strict=True)}
        from_python = {name: MIRRORS[name](keys, arg) for name, _ in functions}
        assert from_lua == from_python


def test_no_script_builds_a_key_name_outside_the_key_functions() -> None:
    built = re.compile(r"\bP \.\. ")
    found = []
    for entry in [*SCRIPTS.iterdir(), *SCRIPTS.joinpath("includes").iterdir()]:
        if not entry.name.endswith(".lua"):
            continue
        for n, line in enumerate(entry.read_text().splitlines(), 1):
            if built.search(line) and not line.startswith("local function k_"):
                found.append(f"{entry.name}:{n}: {line.strip()}")
    assert found == []
