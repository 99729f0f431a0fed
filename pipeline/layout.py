"""Reading job and DAG hashes back as the fields every reader expects.

The Lua transitions store a hash compactly (schema 2, docs/redis-layout.md): fields at
their usual value are left out, a job's id, DAG and name are its key's, long values are
kept in pieces of 64 bytes so the hash stays a listpack, and a job's edges are fields of
its own hash. DAGs written by schema 1 (no ``v`` field) store everything in full; both
read the same here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.replies import as_str_dict

SCHEMA = 2  # the `SCHEMA` of scripts/includes/common.lua
LONG_MARK = "\x01"  # a value stored in pieces: "\x01<n>", pieces in "<field>#1".."#n"
DEP_PREFIX = "d:"  # a parent's dependency state: "d:<child name>" -> pending | done | ...

# What an absent field of a job hash means.
JOB_DEFAULTS: dict[str, str] = {
    "attempts": "0",
    "stalls": "0",
    "prio": "0",
    "cost": "1",
    "tags": "",
    "fallback": "",
    "backoff": "",
    "max_stalls": "0",
    "run_at": "0",
    "pct": "0",
    "root": "0",
    "pending": "0",
    "failed_deps": "0",
    "has_deps": "0",
}
# ... and of a DAG hash.
DAG_DEFAULTS: dict[str, str] = {
    "dead": "0",
    "upstream": "0",
    "cancelled": "0",
    "roots_failed": "0",
    "pct_sum": "0",
    "finished": "",
    "idem": "",
    "req": "",
    "meta": "{}",
}


def join_long(fields: Mapping[str, str]) -> dict[str, str]:
    """``fields`` with every value stored in pieces put back together, pieces dropped."""
    out: dict[str, str] = {}
    for name, value in fields.items():
        if "#" in name:
            continue  # a piece (no field name of ours has a '#')
        if value.startswith(LONG_MARK):
            value = "".join(fields[f"{name}#{i}"] for i in range(1, int(value[1:]) + 1))
        out[name] = value
    return out


def job_fields(job_id: str, raw: Mapping[Any, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """A job hash (HGETALL) as full fields, and its dependencies: child id -> state."""
    fields = join_long(as_str_dict(raw))
    dag, _, name = job_id.partition("/")
    deps = {
        dag + "/" + k[len(DEP_PREFIX) :]: fields.pop(k)
        for k in [k for k in fields if k.startswith(DEP_PREFIX)]
    }
    fields.pop("parents", None)
    return {**JOB_DEFAULTS, "id": job_id, "dag": dag, "name": name, **fields}, deps


def dag_fields(dag_id: str, raw: Mapping[Any, Any]) -> dict[str, str]:
    """A DAG hash (HGETALL) as full fields."""
    return {**DAG_DEFAULTS, "id": dag_id, **join_long(as_str_dict(raw))}
