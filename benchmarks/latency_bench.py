"""Latency: submit -> first stage running, with an idle worker node waiting for work.

Ours: a real ``mediapipe worker --concurrency 2 --no-adaptive`` process, idle (blocked on
its queue marker), and one-job DAGs of ``bench.spin`` with 0 iterations submitted one at a
time with ``Client.submit``; the next is submitted once the previous DAG completed and a
random 20-50 ms pause has let the node go idle again. Measured two ways:

- ``stage start``: ``time.time()`` just before ``submit()`` to the ``time.time()`` the stage
  function itself reads when it starts in the pool child (it returns it): the whole path,
  submit script, marker wake-up, claim, dispatch over the pipe, child start of the job.
- ``claimed``: the DAG's own event stream, ``active`` event id minus ``submitted`` event id
  (Redis server milliseconds, so 1 ms resolution): submit to claim, inside Redis' clock.

The others are floors measured the same way, interleaved sample by sample:

- ``redis BRPOP``: an idle process blocked on BRPOP; LPUSH of the send time; it takes
  ``time.time()`` on receipt. The cost of one Redis hop to a blocked consumer.
- ``mp.Pool(2).apply_async``: an idle forkserver pool; the function returns the
  ``time.time()`` at which it started. Local dispatch with no Redis at all.

usage (internal): python benchmarks/latency_bench.py brpop-consumer URL KEY
"""

from __future__ import annotations

import multiprocessing as mp
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    REPO,
    BenchError,
    Figure,
    conditions,
    kill_group,
    log,
    percentile,
    python_env,
    worker_node,
)

NAMESPACE = "lat"
TARGET_P50_MS = 5.0


def stamp() -> float:
    """What the pool floor runs: the time it started."""
    return time.time()


def brpop_consumer(url: str, key: str) -> None:
    """The Redis floor's consumer: each message is a send time; answer the receive time."""
    r = redis.Redis.from_url(url)
    while True:
        item = r.brpop([key], timeout=60)
        if item is None:
            return
        got = time.time()
        if item[1] == b"stop":
            return
        r.lpush(key + ":ack", repr(got))


def _ms(xs: list[float]) -> dict[str, float | None]:
    return {
        "p50_ms": percentile(xs, 50),
        "p90_ms": percentile(xs, 90),
        "p99_ms": percentile(xs, 99),
        "max_ms": max(xs) if xs else None,
        "n": len(xs),
    }


def _one_dag(client: Any, i: int, timeout: float) -> tuple[float, float | None]:
    """Submit one bench.spin DAG; (stage start - submit, active - submitted from events), ms."""
    from pipeline.model import Dag

    dag = Dag()
    dag.add("spin", "bench.spin", {"iterations": 0, "i": i})
    t0 = time.time()
    client.submit(dag)
    stamps: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    for ev in client.events(dag.id, follow=True, block=1.0):
        stamps.setdefault(ev.type, ev.timestamp_ms)
        if ev.type in ("dag_completed", "dag_failed") or time.monotonic() > deadline:
            break
    if "dag_completed" not in stamps:
        raise BenchError(f"latency DAG {dag.id} did not complete in {timeout:.0f}s")
    job = client.job(dag.job_id("spin"))
    start = float(job["result"][0])
    claimed = None
    if "active" in stamps and "submitted" in stamps:
        claimed = float(stamps["active"] - stamps["submitted"])
    return (start - t0) * 1000, claimed


def run_latency(url: str, workdir: Path, *, samples: int, warmup: int = 5) -> dict[str, Any]:
    import benchmarks.cpu_stage  # noqa: F401  (registers bench.spin for the client)
    from pipeline.client import Client
    from pipeline.registry import REGISTRY

    client = Client.connect(url, namespace=NAMESPACE, registry=REGISTRY)
    r = redis.Redis.from_url(url)
    key = f"latfloor:{time.time_ns()}"
    consumer = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "brpop-consumer", url, key],
        cwd=REPO,
        env=python_env(),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    ours: list[float] = []
    claimed: list[float] = []
    floor: list[float] = []
    pool_lat: list[float] = []
    before = conditions()
    try:
        with (
            mp.get_context("forkserver").Pool(2) as pool,
            worker_node(
                url, NAMESPACE, workdir / "latency-worker.log", imports=("benchmarks.cpu_stage",)
            ),
        ):
            for i in range(warmup + samples):
                time.sleep(random.uniform(0.02, 0.05))
                a, b = _one_dag(client, i, 30.0)
                time.sleep(random.uniform(0.02, 0.05))
                t0 = time.time()
                r.lpush(key, repr(t0))
                ack = r.brpop([key + ":ack"], timeout=10)
                if ack is None:
                    raise BenchError("BRPOP floor consumer did not answer in 10 s")
                f = (float(ack[1]) - t0) * 1000
                time.sleep(random.uniform(0.02, 0.05))
                t0 = time.time()
                p = (pool.apply_async(stamp).get(10) - t0) * 1000
                if i >= warmup:  # the first ones pay imports and first connections
                    ours.append(a)
                    if b is not None:
                        claimed.append(b)
                    floor.append(f)
                    pool_lat.append(p)
    finally:
        r.lpush(key, "stop")
        kill_group(consumer, grace=5)
        r.delete(key, key + ":ack")
        r.close()
        client.redis.close()
    stats = {
        "stage_start": _ms(ours),
        "claimed_redis_clock": _ms(claimed),
        "floor_redis_brpop": _ms(floor),
        "floor_mp_pool": _ms(pool_lat),
    }
    figures = [
        Figure(
            "latency_p50",
            "submit -> stage running, p50 (idle worker node)",
            "ms",
            stats["stage_start"]["p50_ms"],
            {
                "redis BRPOP wake-up": stats["floor_redis_brpop"]["p50_ms"],
                "mp.Pool(2).apply_async": stats["floor_mp_pool"]["p50_ms"],
            },
            higher_is_better=False,
            target=f"<= {TARGET_P50_MS:g} ms",
            target_on="ours",
        ),
        Figure(
            "latency_p99",
            "submit -> stage running, p99",
            "ms",
            stats["stage_start"]["p99_ms"],
            {
                "redis BRPOP wake-up": stats["floor_redis_brpop"]["p99_ms"],
                "mp.Pool(2).apply_async": stats["floor_mp_pool"]["p99_ms"],
            },
            higher_is_better=False,
        ),
        Figure(
            "latency_claim_p50",
            "submit -> claimed (Redis clock, 1 ms resolution), p50",
            "ms",
            stats["claimed_redis_clock"]["p50_ms"],
            higher_is_better=False,
        ),
    ]
    log(
        "latency: stage start p50 {:.2f} ms p99 {:.2f} ms; BRPOP floor p50 {:.2f} ms; "
        "Pool p50 {:.2f} ms".format(
            stats["stage_start"]["p50_ms"] or 0,
            stats["stage_start"]["p99_ms"] or 0,
            stats["floor_redis_brpop"]["p50_ms"] or 0,
            stats["floor_mp_pool"]["p50_ms"] or 0,
        )
    )
    return {
        "figures": figures,
        "detail": {"samples": samples, "warmup": warmup, "before": before, **stats},
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "brpop-consumer":
        brpop_consumer(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
