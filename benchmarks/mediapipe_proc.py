"""The mediapipe side of queue_bench.py; each command runs as its own OS process.

usage: python benchmarks/mediapipe_proc.py enqueue single|bulk N
       python benchmarks/mediapipe_proc.py worker
       python benchmarks/mediapipe_proc.py check

- ``enqueue``: N DAGs of one no-op job each, through ``Client.submit`` one DAG per call
  (single) or ``Client.submit_many`` with 1000 DAGs per call (bulk). Only the enqueue loop
  is timed, DAG construction included, as the peers' enqueue.py times message
  construction; imports and client construction are not. Prints one JSON line.
- ``worker``: one ``InlineRunner`` over a ``Broker`` on a registry with a ``noop`` stage
  that only counts its completion. Runs until SIGTERM, then finishes the job in hand and
  exits 0, so the orchestrator can tell a clean stop from a kill.
- ``check``: what is left in Redis after a run (waiting, active, delayed, dead) and the
  Redis-side completion window of the DAGs, as JSON.

Environment (set by queue_bench.py, names shared with the peer harness):
PEERBENCH_REDIS_URL, and PEERBENCH_COUNT_DIR for the worker.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.connection import connect
from pipeline.model import Dag
from pipeline.registry import Registry, stage
from workers.inline import InlineRunner

QUEUE = "default"
# DAGs per submit_many call: the chunk the peers' bulk enqueues (rq, bullmq) use.
CHUNK = 1000


def payload(i: int) -> dict[str, Any]:
    """The same small params dict every peer's no-op job carries (peers/enqueue.py)."""
    return {"i": i, "op": "noop", "src": f"media/clip_{i:06d}.mp4"}


def noop_registry(record: Callable[[], None] | None = None) -> Registry:
    reg = Registry()

    @stage("noop", registry=reg)
    def noop(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        if record is not None:
            record()

    return reg


def _dag(i: int) -> Dag:
    dag = Dag()
    dag.add("noop", "noop", payload(i))
    return dag


def enqueue(mode: str, n: int) -> dict[str, Any]:
    client = Client(connect(os.environ["PEERBENCH_REDIS_URL"]), registry=noop_registry())
    t0 = time.perf_counter()
    if mode == "single":
        for i in range(n):
            client.submit(_dag(i))
        how = "Client.submit, one DAG (one no-op job) per call"
    elif mode == "bulk":
        for s in range(0, n, CHUNK):
            client.submit_many([_dag(i) for i in range(s, min(n, s + CHUNK))])
        how = f"Client.submit_many, {CHUNK} DAGs per call"
    else:
        raise SystemExit(f"unknown enqueue mode {mode!r}")
    dt = time.perf_counter() - t0
    counts = client.queue_counts(QUEUE)
    return {
        "lib": "mediapipe",
        "n": n,
        "seconds": dt,
        "rate": n / dt,
        "method": how,
        "waiting": counts["waiting"],
    }


def _counter_record() -> Callable[[], None]:
    # The shared harness's counter when it is on PYTHONPATH, so the per-job measuring
    # cost is exactly the peers'; the compatible local copy otherwise.
    try:
        import peercount  # type: ignore[import-not-found]

        rec: Callable[[], None] = peercount.record
    except ImportError:
        import mmcounter

        rec = mmcounter.record
    return rec


def worker(prefetch: int = 1) -> dict[str, Any]:
    stopping = threading.Event()
    # A flag, not an exception: the runner checks it between jobs, so the job in hand is
    # completed and nothing is left claimed. SIGINT too, for a manual run in a terminal.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    reg = noop_registry(_counter_record())
    broker = Broker(connect(os.environ["PEERBENCH_REDIS_URL"]), registry=reg)
    runner = InlineRunner(broker, [QUEUE], registry=reg, prefetch=prefetch)
    processed = runner.run(stopping.is_set)
    return {"pid": os.getpid(), "processed": processed}


def check() -> dict[str, Any]:
    """What the run left in Redis, and when Redis recorded the first and last DAG done.

    The stage counts a job when it returns, which may be before its completion reaches
    Redis (completions can be batched); the ``dags:done`` scores (server time, ms) give
    a second, Redis-side process window that such deferral cannot shorten.
    """
    client = Client(connect(os.environ["PEERBENCH_REDIS_URL"]), registry=Registry())
    counts = client.queue_counts(QUEUE)
    r, keys = client.redis, client.keys
    first = r.zrange(keys.dags_done, 0, 0, withscores=True)
    last = r.zrange(keys.dags_done, -1, -1, withscores=True)
    return {
        **counts,
        "dead": int(r.zcard(keys.dead)),
        "dags_done": int(r.zcard(keys.dags_done)),
        "dags_failed": int(r.zcard(keys.dags_failed)),
        "done_first_ms": first[0][1] if first else None,
        "done_last_ms": last[0][1] if last else None,
    }


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    cmd = argv[0] if argv else ""
    if cmd == "enqueue" and len(argv) == 3:
        out = enqueue(argv[1], int(argv[2]))
    elif cmd == "worker":
        out = worker(int(argv[1]) if len(argv) > 1 else 1)
    elif cmd == "check":
        out = check()
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
