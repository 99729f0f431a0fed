"""A one-job ``Client.submit`` through its three paths, side by side on one server, the
same DAGs in turn, repetition by repetition:

- ``plain``: ``PlainJobs`` takes the job's queue, attempts and timeout from what it worked
  out once for its stage, and sends the job's fields as arguments to ``submit_one`` (what
  the client does for a lone job without options or webhook);
- ``submit_one``: the job encoded as ``encode_jobs`` encodes any job, then sent to
  ``submit_one`` (what the client does for a lone job with a webhook, say);
- ``submit_dag``: the job encoded and sent as a JSON list (any other DAG).

Prints the FCALL's server microseconds a call (INFO commandstats) and the wall
microseconds a call, with medians and the paired ratios.

    python benchmarks/submit_paths.py [--n 1000] [--reps 21] [--server /usr/bin/redis-server]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks.common import ScratchServer
from benchmarks.mediapipe_proc import noop_registry, payload
from pipeline import client as client_module
from pipeline.client import Client
from pipeline.model import Dag

PATHS = ("plain", "submit_one", "submit_dag")


def _fcall(r: redis.Redis) -> tuple[int, int]:
    s: dict[str, Any] = r.info("commandstats").get("cmdstat_fcall", {})
    return int(s.get("calls", 0)), int(s.get("usec", 0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--server", default="/usr/bin/redis-server")
    a = ap.parse_args()
    fields = client_module.submit_one_fields
    srv = ScratchServer(a.server)
    try:
        r = redis.Redis(port=srv.port)
        client = Client(r, registry=noop_registry())
        server_us: dict[str, list[float]] = {p: [] for p in PATHS}
        wall_us: dict[str, list[float]] = {p: [] for p in PATHS}
        plain_of = client._plain.of
        for rep in range(a.reps):
            k = rep % len(PATHS)
            for path in PATHS[k:] + PATHS[:k]:
                client_module.submit_one_fields = (
                    fields if path != "submit_dag" else (lambda job: None)
                )
                client._plain.of = plain_of if path == "plain" else (lambda dag, registry: None)  # type: ignore[method-assign]
                dags = []
                for i in range(a.n):
                    d = Dag()
                    d.add("noop", "noop", payload(i))
                    dags.append(d)
                r.flushdb()  # each loop from an empty keyspace
                c0, u0 = _fcall(r)
                t0 = time.perf_counter()
                for d in dags:
                    client.submit(d)
                wall = time.perf_counter() - t0
                c1, u1 = _fcall(r)
                server_us[path].append((u1 - u0) / (c1 - c0))
                wall_us[path].append(wall / a.n * 1e6)
                print(
                    f"rep {rep} {path}: {server_us[path][-1]:.1f} us of server time, "
                    f"{wall_us[path][-1]:.1f} us a call",
                    flush=True,
                )
        for path in PATHS:
            print(
                f"{path}: median {statistics.median(server_us[path]):.1f} us of server time, "
                f"{statistics.median(wall_us[path]):.1f} us a call"
            )
        for what, per in (("server time", server_us), ("wall time", wall_us)):
            for one, other in (("plain", "submit_one"), ("submit_one", "submit_dag"),
                               ("plain", "submit_dag")):  # fmt: skip
                pairs = [x / y for x, y in zip(per[one], per[other], strict=True)]
                q = statistics.quantiles(pairs, n=4)
                print(
                    f"paired ({a.reps} reps): {one} / {other} {what} median "
                    f"{statistics.median(pairs):.3f} (quartiles {q[0]:.3f}..{q[2]:.3f}); "
                    f"less in {sum(p < 1 for p in pairs)} of {a.reps}"
                )
    finally:
        client_module.submit_one_fields = fields
        srv.stop()


if __name__ == "__main__":
    main()
