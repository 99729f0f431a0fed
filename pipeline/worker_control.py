"""Asking a live worker node to drain or stop, from another process (the dashboard).

The request is a small string key beside the worker's heartbeat hash,
``{ns}:worker:<id>:control``, holding ``drain`` or ``stop``. The node reads it with each
heartbeat (every 2 s by default) and acts as on a signal:

- ``drain``: what SIGTERM does. The node takes no new job, lets the running ones finish
  within its grace period, hands back what it had claimed but not started, deregisters
  and exits 0.
- ``stop``: what a second SIGTERM does. The running jobs are stopped now and handed
  straight back to their queue (another worker runs them again), then the node exits.

The key expires on its own (``TTL_S``), so a request to a node that dies before reading
it leaves nothing behind, and the node deletes it when it leaves. A drain never turns a
stop already asked for back into a drain. Only the heartbeat's own fields are in the
worker hash: writing the request there would recreate the hash, without its expiry, for
a node that has just left.
"""

from __future__ import annotations

from typing import Any

import redis

from pipeline.clock import redis_now_ms
from pipeline.keys import Keys
from pipeline.replies import as_str

DRAIN = "drain"
STOP = "stop"
COMMANDS = (DRAIN, STOP)
TTL_S = 600  # longer than any heartbeat interval; a node that never reads it is gone


def is_live(r: redis.Redis, keys: Keys, worker_id: str) -> bool:
    """Whether the worker's heartbeat has not expired (by Redis' clock)."""
    score: Any = r.zscore(keys.workers, worker_id)
    return score is not None and float(score) > redis_now_ms(r)


def ask(r: redis.Redis, keys: Keys, worker_id: str, command: str) -> None:
    """Leave ``command`` for the worker to read with its next heartbeat."""
    if command not in COMMANDS:
        raise ValueError(f"unknown worker command {command!r}: use {' or '.join(COMMANDS)}")
    # NX for a drain: a stop asked for already stays a stop.
    r.set(keys.worker_control(worker_id), command, ex=TTL_S, nx=command == DRAIN)


def asked(r: redis.Redis, keys: Keys, worker_id: str) -> str | None:
    """What the worker has been asked to do, if anything."""
    value = r.get(keys.worker_control(worker_id))
    command = as_str(value) if value is not None else None
    return command if command in COMMANDS else None


def forget(r: redis.Redis, keys: Keys, worker_id: str) -> None:
    """Drop the request (the node, as it leaves)."""
    r.delete(keys.worker_control(worker_id))
