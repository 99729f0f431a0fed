"""No-op jobs/s on one namespace (one master) against three namespaces on three masters of
a Valkey Cluster, with the Redis CPU each master spends per job.

A cluster of three real valkey-server masters on 127.0.0.1 (tests/cluster_cell.py).
Each repetition fills the namespaces with one-job no-op DAGs and drains them with the
same number of ``noop_drain.py`` processes in all (one job per round trip, as the queue
benchmark's processing case): ``one`` puts every process on one namespace, ``three``
one process per namespace, each namespace on its own master. The cases alternate; the
medians are reported. Redis CPU per job comes from each master's ``INFO cpu`` over the
drain, so the capacity of a master (and of N masters on a machine with the cores for
them) can be projected: one master saturates near 1e6 / (its CPU us per job) jobs/s.

    python benchmarks/cluster_bench.py [--reps 3] [--jobs 12000] [--procs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from depth_bench import drain  # noqa: E402
from mediapipe_proc import noop_registry, payload  # noqa: E402

from benchmarks.common import conditions  # noqa: E402
from pipeline.client import Client  # noqa: E402
from pipeline.connection import client_from_url  # noqa: E402
from pipeline.model import Dag  # noqa: E402
from pipeline.retention import Retention  # noqa: E402
from pipeline.server import server_binary  # noqa: E402
from tests.cluster_cell import ClusterCell  # noqa: E402

DRAIN = HERE / "noop_drain.py"
# standalone: one namespace on a valkey-server outside cluster mode (the cost of cluster
# mode itself); one: one namespace on one cluster master; three: one per master.
CASES = ("standalone", "one", "three")
DRAINED = Retention(completed_count=0, completed_age=0, budget=5000)


def _cpu(cell: Any, port: int) -> float:
    info: Any = cell.node(port).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def fill(client: Client, n: int) -> None:
    for s in range(0, n, 2000):
        dags = []
        for i in range(s, min(n, s + 2000)):
            dag = Dag()
            dag.add("noop", "noop", payload(i))
            dags.append(dag)
        client.submit_many(dags, chunk=1000)


class Standalone:
    """One valkey-server outside cluster mode, for the cost of cluster mode itself."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [server_binary(), "--port", str(self.port), "--save", "", "--appendonly", "no"],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}"
        self.ports = [self.port]
        deadline = time.monotonic() + 10
        while True:
            try:
                self.node(self.port).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port)

    def owner(self, namespace: str) -> int:
        return self.port

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_case(cell: Any, case: str, namespaces: list[str], jobs: int, procs: int) -> dict[str, Any]:
    used = namespaces if case == "three" else namespaces[:1]
    clients = {
        ns: Client(client_from_url(cell.url, namespace=ns), namespace=ns, registry=noop_registry())
        for ns in used
    }
    per_ns = jobs // len(used)
    for client in clients.values():
        fill(client, per_ns)
    each = procs // len(used)  # drain processes per namespace
    plan = [(ns, per_ns // each) for ns in used for _ in range(each)]
    masters = {ns: cell.owner(ns) for ns in used}
    before = {port: _cpu(cell, port) for port in cell.ports}
    out = drain(
        cell.url, len(plan), 1, sum(j for _, j in plan), 600, namespaces=[ns for ns, _ in plan]
    )
    after = {port: _cpu(cell, port) for port in cell.ports}
    per_master = {}
    for ns, port in masters.items():
        share = sum(j for n, j in plan if n == ns)
        per_master[f"{ns}@{port}"] = round(1e6 * (after[port] - before[port]) / share, 1)
    for client in clients.values():
        client.prune(DRAINED)
    out.update(case=case, procs=len(plan), redis_cpu_us_per_job=per_master)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=12000, help="jobs per repetition and case")
    ap.add_argument("--procs", type=int, default=3, help="drain processes in all")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mp-cluster-bench-") as tmp:
        cell = ClusterCell(Path(tmp))
        plain = Standalone(Path(tmp))
        try:
            namespaces = cell.namespaces("bench")
            runs: list[dict[str, Any]] = []
            for rep in range(args.reps):
                order = CASES if rep % 2 == 0 else CASES[::-1]
                for case in order:
                    where = plain if case == "standalone" else cell
                    r = one_case(where, case, namespaces, args.jobs, args.procs)
                    r["rep"] = rep
                    print(
                        f"rep {rep} {case:5s}: {r['rate']:8.0f} jobs/s, Redis CPU us/job "
                        f"{r['redis_cpu_us_per_job']}",
                        file=sys.stderr,
                        flush=True,
                    )
                    runs.append(r)
        finally:
            cell.stop()
            plain.stop()
    summary: dict[str, Any] = {"conditions": conditions(), "runs": runs}
    for case in CASES:
        rates = [r["rate"] for r in runs if r["case"] == case]
        cpu = [v for r in runs if r["case"] == case for v in r["redis_cpu_us_per_job"].values()]
        summary[case] = {
            "median_rate": round(statistics.median(rates)),
            "median_redis_cpu_us_per_job": round(statistics.median(cpu), 1),
        }
    summary["three_vs_one"] = round(
        summary["three"]["median_rate"] / summary["one"]["median_rate"], 2
    )
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(json.dumps({k: summary[k] for k in (*CASES, "three_vs_one")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
