"""Worker benchmark: CPU-bound jobs through a mediapipe worker node vs multiprocessing.Pool.

    python benchmarks/worker_bench.py [--jobs 200] [--ms 50] [--reps 3] [--slots 2] [--json]

Each job is the same fixed pure-Python loop (calibrated to about --ms milliseconds). The
ceiling is ``multiprocessing.Pool(slots).imap_unordered`` over the same function; ours is
one ``mediapipe worker --concurrency slots`` process (pool children, leases renewed,
results through Redis) draining the same number of one-job DAGs submitted beforehand.
Both rates are jobs / (last job end - first job start), the timestamps taken inside the
jobs, so process start-up is excluded on both sides. Repetitions are interleaved.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchmarks.cpu_stage import spin  # noqa: E402
from pipeline.client import Client  # noqa: E402
from pipeline.model import Dag  # noqa: E402
from pipeline.registry import REGISTRY  # noqa: E402
from pipeline.server import EmbeddedServer  # noqa: E402


def calibrate(ms: float) -> int:
    n = 200_000
    while True:
        s, e = spin(n)
        if e - s > 0.2:
            return int(n * (ms / 1000) / (e - s))
        n *= 2


def run_pool(jobs: int, iterations: int, slots: int) -> float:
    with mp.get_context("forkserver").Pool(slots) as pool:
        spans = list(pool.imap_unordered(spin, [iterations] * jobs, chunksize=1))
    return jobs / (max(e for _, e in spans) - min(s for s, _ in spans))


def run_mediapipe(url: str, jobs: int, iterations: int, slots: int, log: Path) -> float:
    ns = f"wb{os.getpid()}{time.time_ns() % 10**6}"
    client = Client.connect(url, namespace=ns, registry=REGISTRY)
    dags = []
    for i in range(jobs):
        d = Dag()
        d.add("spin", "bench.spin", {"iterations": iterations, "i": i})
        dags.append(d)
    client.submit_many(dags)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mediajobs",
                "--redis",
                url,
                "--namespace",
                ns,
                "worker",
                "--concurrency",
                str(slots),
                "--no-adaptive",
                "--import",
                "benchmarks.cpu_stage",
                "--log-level",
                "WARNING",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 600
            while int(client.redis.zcard(client.keys.dags_done)) < jobs:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"worker did not finish; see {log}")
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    spans = [client.job(d.job_id("spin"))["result"] for d in dags]  # type: ignore[index]
    rate = jobs / (max(e for _, e in spans) - min(s for s, _ in spans))
    keys = list(client.redis.scan_iter(match=client.keys.pattern(), count=1000))
    for i in range(0, len(keys), 500):
        client.redis.delete(*keys[i : i + 500])
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--ms", type=float, default=50.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument(
        "--redis",
        default=os.environ.get("MEDIAPIPE_REDIS_URL"),
        help="Redis URL (default: a private embedded server)",
    )
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="worker-bench-"))
    server = None
    url = a.redis
    if not url:
        server = EmbeddedServer(tmp / "home")
        server.ensure_running()
        url = server.url
    try:
        iterations = calibrate(a.ms)
        pool_rates, mp_rates = [], []
        for rep in range(a.reps):
            pool_rates.append(run_pool(a.jobs, iterations, a.slots))
            mp_rates.append(run_mediapipe(url, a.jobs, iterations, a.slots, tmp / "worker.log"))
            print(
                f"rep {rep}: pool {pool_rates[-1]:.2f} jobs/s, mediapipe {mp_rates[-1]:.2f} jobs/s",
                file=sys.stderr,
            )
    finally:
        if server:
            server.stop()
    pool_med, mp_med = statistics.median(pool_rates), statistics.median(mp_rates)
    result: dict[str, Any] = {
        "jobs": a.jobs,
        "ms_per_job": a.ms,
        "iterations": iterations,
        "slots": a.slots,
        "pool_rates": pool_rates,
        "mediapipe_rates": mp_rates,
        "pool_median": pool_med,
        "mediapipe_median": mp_med,
        "ratio": mp_med / pool_med,
    }
    if a.json:
        print(json.dumps(result))
    else:
        print(f"| runner | jobs/s (median of {a.reps}) | all reps |\n|---|---:|---|")
        print(
            f"| multiprocessing.Pool({a.slots}) | {pool_med:.2f} | "
            f"{', '.join(f'{r:.2f}' for r in pool_rates)} |"
        )
        print(
            f"| mediapipe worker --concurrency {a.slots} | {mp_med:.2f} | "
            f"{', '.join(f'{r:.2f}' for r in mp_rates)} |"
        )
        print(f"\nratio mediapipe / Pool: {mp_med / pool_med:.3f}")


if __name__ == "__main__":
    main()
