"""Small helpers shared by the tests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from pipeline.broker import Broker
from pipeline.client import TERMINAL_DAG_STATES, Client
from workers.inline import InlineRunner


def run_dag(
    client: Client,
    broker: Broker,
    dag_id: str,
    *,
    queues: tuple[str, ...] = ("default",),
    timeout: float = 30.0,
    prefetch: int = 1,
) -> str:
    """Run an inline runner until the DAG finishes; return its final state."""
    deadline = time.monotonic() + timeout

    def stop() -> bool:
        return client.dag_state(dag_id) in TERMINAL_DAG_STATES or time.monotonic() > deadline

    InlineRunner(broker, queues, prefetch=prefetch, idle_wait=0.05).run(stop)
    state = client.dag_state(dag_id)
    assert state is not None
    return state


def http_status(
    url: str, *, method: str = "GET", body: dict[str, Any] | None = None, token: str | None = None
) -> int:
    """The HTTP status of one JSON request (a POST sends ``body``, ``{}`` by default),
    with the dashboard's bearer token when given; an error status is returned, not raised."""
    data = json.dumps(body or {}).encode() if method == "POST" else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
