"""Where a one-at-a-time ``Client.submit`` of a one-job DAG spends its time: the client's
CPU (``time.process_time``), the server's ``submit_dag`` FCALL (INFO commandstats), and
for scale redis-py's LPUSH of a pickled tuple (what a huey-style enqueue sends), all
against an embedded server of its own. ``--opcodes`` counts the Python opcodes of each
submit instead (``sys.settrace``): deterministic where timings on a shared VM are not.

    python benchmarks/submit_cost.py SOURCE_TREE N [--opcodes]
    e.g. python benchmarks/submit_cost.py . 5000

A checkout of another commit as SOURCE_TREE compares two versions on one machine.
"""

from __future__ import annotations

import collections
import pickle
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any


def main(tree: str, n: int, opcodes: bool) -> None:
    sys.path.insert(0, tree)
    from pipeline.client import Client
    from pipeline.model import Dag
    from pipeline.registry import Registry, stage
    from pipeline.server import EmbeddedServer

    reg = Registry()

    @stage("noop", registry=reg)
    def noop(ctx: Any, params: Any, inputs: Any) -> int:
        return 1

    def one(i: int) -> Dag:  # what benchmarks/mediapipe_proc.py submits
        d = Dag()
        d.add("noop", "noop", {"i": i, "payload": "x" * 32})
        return d

    server = EmbeddedServer(Path(tempfile.mkdtemp()))
    server.ensure_running()
    try:
        r = server.client()
        client = Client(server.client(), registry=reg)
        for i in range(500):  # warm: the library loaded, the connection held
            client.submit(one(i))
        if opcodes:
            count: collections.Counter[str] = collections.Counter()

            def tracer(frame: FrameType, event: str, arg: Any) -> Any:
                frame.f_trace_opcodes = True
                if event == "opcode":
                    count[frame.f_code.co_name] += 1
                return tracer

            sys.settrace(tracer)
            for i in range(n):
                client.submit(one(1000 + i))
            sys.settrace(None)
            top = ", ".join(f"{k} {v / n:.0f}" for k, v in count.most_common(8))
            print(f"{tree}: {sum(count.values()) / n:.0f} opcodes a submit ({top})")
            return
        r.config_resetstat()
        t, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            client.submit(one(1000 + i))
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        f = r.info("commandstats").get("cmdstat_fcall", {})
        t2, cpu2 = time.perf_counter(), time.process_time()
        for i in range(n):
            r.lpush("lpush-bench", pickle.dumps(("noop", i, {"i": i, "payload": "x" * 32})))
        wall2, cpu2 = time.perf_counter() - t2, time.process_time() - cpu2
        print(
            f"{tree}: Client.submit {n / wall:.0f}/s, {wall / n * 1e6:.0f} us a call, "
            f"{cpu / n * 1e6:.0f} us of client CPU, {f.get('usec', 0) / n:.0f} us of server "
            f"time; redis-py LPUSH of a pickle {n / wall2:.0f}/s, {cpu2 / n * 1e6:.0f} us "
            "of client CPU"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), "--opcodes" in sys.argv[3:])
