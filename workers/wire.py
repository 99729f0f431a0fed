"""Messages from a child process to its parent: JSON, never pickles.

A pool child, like the child that probes a schedule's inputs, decodes untrusted media; if
a crafted file ever took it over, a pickle sent to the parent (which holds every job's
lease) would run code there. So the child speaks plain JSON, one list per message
``[kind, job id, ...]``, and the parent checks each message's shape before using it.
(Parent-to-child messages stay pickles: the parent is the trusted side.)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from pipeline.model import Backoff, Dag, JobOptions

MAX_MESSAGE = 64 * 1024 * 1024  # a result or a fan-out of many jobs; bigger is refused


def send(conn: Connection, *msg: Any) -> None:
    conn.send_bytes(json.dumps(list(msg), separators=(",", ":"), default=str).encode())


def recv(conn: Connection) -> list[Any]:
    msg = json.loads(conn.recv_bytes(MAX_MESSAGE))
    if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
        raise ValueError(f"not a message: {msg!r:.200}")
    return msg


def dag_to_wire(dag: Dag) -> dict[str, Any]:
    nodes = []
    for n in dag.nodes.values():
        options = asdict(n.options)
        options["backoff"] = n.options.backoff.to_json() if n.options.backoff else None
        nodes.append(
            {
                "name": n.name,
                "stage": n.stage,
                "params": n.params,
                "options": options,
                "children": {c: str(p) for c, p in n.children.items()},
            }
        )
    return {"id": dag.id, "idempotency_key": dag.idempotency_key, "meta": dag.meta, "nodes": nodes}


def dag_from_wire(data: Any) -> Dag:
    """A DAG a child asked for (a fan-out, or a schedule's input it probed), rebuilt (and
    so validated) in the parent."""
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise ValueError("not a DAG")
    key, meta = data.get("idempotency_key"), data.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError("not a DAG: meta is not an object")
    dag = Dag(str(data["id"]), idempotency_key=None if key is None else str(key), meta=meta)
    for n in data["nodes"]:
        o = dict(n["options"])
        o["backoff"] = Backoff.from_json(o["backoff"]) if o.get("backoff") else None
        if o.get("tags") is not None:
            o["tags"] = tuple(o["tags"])
        dag.add(
            str(n["name"]),
            str(n["stage"]),
            dict(n["params"]),
            after={str(c): str(p) for c, p in dict(n["children"]).items()},
            options=JobOptions(**o),
        )
    return dag
