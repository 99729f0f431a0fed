"""Small helpers shared by the tests."""

from __future__ import annotations

import time

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
