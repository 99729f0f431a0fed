"""Server time and client CPU per job of the transitions: 1-job DAGs run by one
InlineRunner in this process against an embedded server of its own; INFO commandstats
gives FCALL's usec, ``time.process_time`` this process's CPU.

    python benchmarks/transition_cost.py SOURCE_TREE N PREFETCH
    e.g. python benchmarks/transition_cost.py . 20000 1

A checkout of another commit as SOURCE_TREE compares two versions on one machine.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main(tree: str, n: int, prefetch: int) -> None:
    sys.path.insert(0, tree)
    from pipeline.broker import Broker
    from pipeline.client import Client
    from pipeline.model import Dag
    from pipeline.registry import Registry, stage
    from pipeline.server import EmbeddedServer
    from workers.inline import InlineRunner

    reg = Registry()

    @stage("noop", registry=reg)
    def noop(ctx: Any, params: Any, inputs: Any) -> int:
        return 1

    server = EmbeddedServer(Path(tempfile.mkdtemp()))
    server.ensure_running()
    try:
        r = server.client()
        dags = []
        for i in range(n):
            d = Dag()
            d.add("a", "noop", {"i": i})
            dags.append(d)
        Client(r, registry=reg).submit_many(dags)
        r.config_resetstat()
        runner = InlineRunner(Broker(server.client(), registry=reg), prefetch=prefetch)
        t, cpu = time.perf_counter(), time.process_time()
        runner.run(lambda: runner.processed >= n)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        f = r.info("commandstats").get("cmdstat_fcall", {})
        print(
            f"{tree}: {n / wall:.0f} jobs/s in one process; {f.get('calls')} FCALLs, "
            f"{f.get('usec_per_call')} us each, {f.get('usec', 0) / n:.1f} us of server time "
            f"a job, {cpu / n * 1e6:.1f} us of client CPU a job"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
