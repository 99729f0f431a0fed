"""The worker's own time per no-op job, without the round trip: an ``InlineRunner`` whose
complete+claim calls are answered at once with a reply recorded from a real server.

    python benchmarks/worker_loop.py [SOURCE_TREE] [--n 20000] [--reps 3] [--server BIN]

What it times is what a worker does between reading one reply and sending its next call
(parsing the claimed job, running the stage, encoding the result and the call), the part
of a cycle that ``sensitivity.py`` finds dearest per microsecond. The stage counts each
job as the queue benchmarks' does (``mediapipe_proc.noop_registry`` with the local
counter). Prints microseconds a job per repetition (wall clock; the loop does no I/O).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tree", nargs="?", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--server", default="/usr/bin/redis-server")
    a = ap.parse_args()
    sys.path[:0] = [a.tree, a.tree + "/benchmarks"]
    import mmcounter  # type: ignore[import-not-found]
    from mediapipe_proc import _dag, noop_registry  # type: ignore[import-not-found]

    from benchmarks.common import ScratchServer
    from pipeline import rawlane
    from pipeline.broker import Broker
    from pipeline.client import Client
    from pipeline.connection import connect
    from workers.inline import InlineRunner

    os.environ["PEERBENCH_COUNT_DIR"] = tempfile.mkdtemp(prefix="worker-loop-")
    srv = ScratchServer(a.server)
    try:
        reg = noop_registry(mmcounter.record)
        Client(connect(srv.url, namespace="wl"), namespace="wl", registry=reg).submit_many(
            [_dag(i) for i in range(100)]
        )
        broker = Broker(connect(srv.url, namespace="wl"), namespace="wl", registry=reg)
        real = rawlane.RawLane.call
        replies: list[Any] = []

        def record(self: Any, packed: bytes) -> Any:
            reply = real(self, packed)
            if b"_complete" in packed and len(reply) > 2:  # a completion that claimed
                replies.append(reply)
            return reply

        rawlane.RawLane.call = record  # type: ignore[method-assign]
        InlineRunner(broker, ["default"], registry=reg).run(lambda: False, max_jobs=50)
        canned = replies[-1]
        rawlane.RawLane.call = lambda self, packed: (  # type: ignore[method-assign]
            canned if b"_complete" in packed else real(self, packed)
        )
        for rep in range(a.reps):
            runner = InlineRunner(broker, ["default"], registry=reg)
            t0 = time.perf_counter()
            runner.run(lambda: False, max_jobs=a.n)
            dt = time.perf_counter() - t0
            print(f"rep {rep}: {dt / a.n * 1e6:.1f} us a job", flush=True)
    finally:
        rawlane.RawLane.call = real  # type: ignore[method-assign]
        srv.stop()


if __name__ == "__main__":
    main()
