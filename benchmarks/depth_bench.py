"""Queue depth and concurrency: does claim + complete slow down when the queue is deep?

The queue is filled with D waiting one-job no-op DAGs (``Client.submit_many``, 10,000 DAGs
per call, pipelined 1,000 per round trip) that stay waiting. Each measured run then
submits a window of W more DAGs at priority 1, so they sit at the head of the wait set in
front of the D, and drains exactly W jobs with ``noop_drain.py`` processes (an
``InlineRunner`` each, over a ``Broker``); the D stay behind, so the depth while measuring
is D to D + W. Rate = W / (last process end - first process start), both ``time.time()``
inside the drain processes, started together after they are set up. Each drained window
is deleted (``Client.prune``) before the next one, so the key count and ``used_memory``
at each depth are the waiting DAGs' (see ``_measure``).

- depth: 1 process, prefetch 1 and prefetch 32 (alternating, ``reps`` times each, after
  one window not counted) at each depth; the ratio rate at the deepest queue / rate at
  1,000 waiting (target >= 0.9).
  The redis-server and the drain process are pinned to the same CPU for these runs: on
  this 2-vCPU VM a round trip between two vCPUs costs a wake-up of an idle vCPU, and
  where the scheduler puts the two processes decided the rate (prefetch 1: 2,200 jobs/s
  on different vCPUs, 7,500 on the same one, anything between unpinned), which would
  drown any effect of depth. ``used_memory`` is read at each depth; before the step to
  1M the bytes per waiting DAG measured so far predict what it needs, and if that does not
  fit in the available memory with room to spare, the largest depth that does is used.
- concurrency: at 1,000 waiting, 1, 2 and 4 processes x prefetch 1, 8 and 32, not pinned
  (for the throughput-vs-concurrency plot).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mediapipe_proc import noop_registry, payload

from benchmarks.common import (
    HERE,
    REPO,
    BenchError,
    Figure,
    cond_str,
    conditions,
    flush,
    kill_group,
    log,
    median,
    python_env,
)
from pipeline.client import Client
from pipeline.model import Dag
from pipeline.retention import Retention

NAMESPACE = "depth"
DRAIN = HERE / "noop_drain.py"
FILL_CALL = 10_000  # DAGs per submit_many call
TARGET = 0.9
MEMORY_HEADROOM = 1.3  # predicted need x this, plus the reserve below, must be available
MEMORY_RESERVE = 2 << 30


def _dag(i: int, priority: int) -> Dag:
    dag = Dag()
    dag.add("noop", "noop", payload(i), priority=priority)
    return dag


# Retention that deletes every completed DAG now (the waiting ones are never touched).
DRAINED = Retention(completed_count=0, completed_age=0, budget=5000)


def fill(client: Client, n: int, *, priority: int = 0, start: int = 0) -> float:
    """Submit n one-job no-op DAGs; returns the seconds it took."""
    t0 = time.perf_counter()
    for s in range(start, start + n, FILL_CALL):
        e = min(start + n, s + FILL_CALL)
        client.submit_many([_dag(i, priority) for i in range(s, e)], chunk=1000)
    return time.perf_counter() - t0


def _readline(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError("drain process: no answer in time")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            if not line:
                raise BenchError(f"drain process exited (rc {proc.poll()})")
            return line.strip()


def drain(
    url: str,
    procs: int,
    prefetch: int,
    jobs: int,
    timeout: float,
    cpu: int | None = None,
    namespaces: list[str] | None = None,
) -> dict[str, Any]:
    """Run ``procs`` drain processes that take ``jobs`` jobs in all; the rate and timings.
    ``cpu``: pin each of them to that CPU; ``namespaces``: the namespace of each process
    (default: all on this benchmark's)."""
    quota = jobs // procs
    where = namespaces or [NAMESPACE] * procs
    ps: list[subprocess.Popen[str]] = []
    deadline = time.monotonic() + timeout
    try:
        for i in range(procs):
            ps.append(
                subprocess.Popen(
                    [sys.executable, str(DRAIN), url, where[i], str(prefetch), str(quota)],
                    cwd=REPO,
                    env=python_env(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
            )
            if cpu is not None:
                os.sched_setaffinity(ps[-1].pid, {cpu})
        for p in ps:
            if _readline(p, deadline) != "ready":
                raise BenchError("drain process did not say ready")
        before = conditions()
        for p in ps:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [json.loads(_readline(p, deadline)) for p in ps]
    finally:
        for p in ps:
            kill_group(p, grace=5)
    start = min(o["start"] for o in outs)
    end = max(o["end"] for o in outs)
    done = sum(o["processed"] for o in outs)
    return {
        "procs": procs,
        "prefetch": prefetch,
        "jobs": done,
        "seconds": end - start,
        "rate": done / (end - start),
        "before": before,
    }


def _measure(
    client: Client,
    url: str,
    procs: int,
    prefetch: int,
    window: int,
    timeout: float,
    seq: int,
    cpu: int | None = None,
) -> dict[str, Any]:
    """Put a window at the head of the queue and drain it, then delete the drained DAGs.

    Deleting them keeps the key count at the depth's own: left in place, each window's
    20,000 keys add up, and the run in which the total crossed a power of two (Redis then
    grows its key table and moves every key over while serving) measured 14,371-14,993
    jobs/s against 22,493-23,257 for the others, in three full runs out of three at 100k
    waiting (the 7th window) and slightly lower at 1k.
    """
    jobs = window - window % procs
    fill(client, jobs, priority=1, start=seq)
    result = drain(url, procs, prefetch, jobs, timeout, cpu)
    client.prune(DRAINED)
    return result


def _memory(client: Client) -> dict[str, int]:
    info = client.redis.info("memory")
    return {
        "used_memory": int(info["used_memory"]),
        "used_memory_rss": int(info["used_memory_rss"]),
        "waiting": int(client.redis.zcard(client.keys.wait("default"))),
    }


def pick_depth(wanted: int, current: int, mem: dict[str, int]) -> tuple[int, str]:
    """The largest of wanted, wanted/2, wanted/5, ... that fits in the available memory."""
    per_dag = mem["used_memory"] / max(1, mem["waiting"])
    available = psutil.virtual_memory().available
    for depth in (wanted, wanted // 2, wanted // 5, wanted // 10):
        need = (depth - current) * per_dag * MEMORY_HEADROOM + MEMORY_RESERVE
        if depth <= current or need <= available:
            why = (
                f"{depth} waiting needs ~{(depth - current) * per_dag / 2**30:.1f} GiB more "
                f"({per_dag:.0f} B per DAG); {available / 2**30:.1f} GiB available"
            )
            return depth, why
    return current, "no larger depth fits"


def run_depth(
    url: str,
    *,
    depths: list[int],
    window: int,
    reps: int,
    sweep_reps: int,
    sweep_window: int,
    redis_pid: int | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    client = Client.connect(url, namespace=NAMESPACE, registry=noop_registry())
    all_cpus = os.sched_getaffinity(0)
    # One CPU for the server and the drain process (see the module docstring).
    pin = max(all_cpus) if redis_pid is not None and len(all_cpus) > 1 else None
    flush(client.redis)
    runs: list[dict[str, Any]] = []
    sweep: list[dict[str, Any]] = []
    memory: dict[int, dict[str, Any]] = {}
    notes: list[str] = []
    seq = 10**9  # window DAG numbers, apart from the background's
    current = 0
    try:
        for target in depths:
            depth = target
            if depth >= 1_000_000 and current:
                depth, why = pick_depth(target, current, memory[current])
                log(f"depth: {why}")
                if depth != target:
                    notes.append(f"{target} waiting does not fit comfortably: {why}; used {depth}")
            if depth <= current:
                continue
            client.prune(DRAINED)  # the warm-up's and the sweep's windows
            added = depth - current
            t_fill = fill(client, added, start=current)
            log(f"depth: filled to {depth} waiting in {t_fill:.1f}s ({added / t_fill:.0f} DAGs/s)")
            current = depth
            memory[depth] = {**_memory(client), "fill_dags_per_s": added / t_fill}
            if pin is not None and redis_pid is not None:
                os.sched_setaffinity(redis_pid, {pin})
            try:
                # One window not counted: the first drain after a fill ran slower in 2 of 3
                # reps at 100k in one full run (a transient of the server right after it).
                _measure(client, url, 1, 1, window, timeout, seq, pin)
                seq += window
                for rep in range(reps):
                    for prefetch in (1, 32):
                        r = _measure(client, url, 1, prefetch, window, timeout, seq, pin)
                        seq += window
                        r.update(depth=depth, rep=rep)
                        runs.append(r)
                        log(
                            f"depth {depth:>8} prefetch {prefetch:>2}: {r['rate']:8.0f} jobs/s "
                            f"({cond_str(r['before'])})"
                        )
            finally:
                if pin is not None and redis_pid is not None:
                    os.sched_setaffinity(redis_pid, all_cpus)
            if depth == depths[0]:
                for rep in range(sweep_reps):
                    for procs in (1, 2, 4):
                        for prefetch in (1, 8, 32):
                            r = _measure(client, url, procs, prefetch, sweep_window, timeout, seq)
                            seq += sweep_window
                            r.update(depth=depth, rep=rep)
                            sweep.append(r)
                            log(
                                f"concurrency: {procs} proc x prefetch {prefetch:>2}: "
                                f"{r['rate']:8.0f} jobs/s"
                            )
    finally:
        flush(client.redis)
        client.redis.close()

    def rate(depth: int, prefetch: int) -> float | None:
        return median(
            [r["rate"] for r in runs if r["depth"] == depth and r["prefetch"] == prefetch]
        )

    measured = sorted({r["depth"] for r in runs})
    low, high = measured[0], measured[-1]
    figures = [
        Figure(
            f"depth_prefetch{p}",
            f"claim+complete, 1 process, prefetch {p}: {high:,} waiting vs {low:,} waiting",
            "jobs/s",
            rate(high, p),
            {f"same at {low:,} waiting": v} if (v := rate(low, p)) else {},
            target=f">= {TARGET}",
            note="; ".join(f"{d:,} waiting: {rate(d, p) or 0:.0f}/s" for d in measured),
        )
        for p in (1, 32)
    ]
    table: dict[str, dict[str, float | None]] = {}
    for procs in (1, 2, 4):
        for prefetch in (1, 8, 32):
            table[f"{procs}x{prefetch}"] = {
                "procs": procs,
                "prefetch": prefetch,
                "rate": median(
                    [r["rate"] for r in sweep if r["procs"] == procs and r["prefetch"] == prefetch]
                ),
            }
    return {
        "figures": figures,
        "detail": {
            "window": window,
            "reps": reps,
            "pinned_cpu": pin,
            "depths": measured,
            "memory": {str(k): v for k, v in memory.items()},
            "notes": notes,
            "rates": {str(d): {f"prefetch{p}": rate(d, p) for p in (1, 32)} for d in measured},
            "runs": runs,
            "concurrency": {
                "window": sweep_window,
                "reps": sweep_reps,
                "median": table,
                "runs": sweep,
            },
        },
    }
