"""Two checkouts side by side: 2 ``noop_drain.py`` workers per tree, the trees alternating,
on one server; jobs/s and the FCALL's server microseconds a job (INFO commandstats).

    python benchmarks/drain_ab.py TREE_A TREE_B [--n 10000] [--reps 6] [--server BIN]
    e.g. git worktree add /tmp/before HEAD~3
         python benchmarks/drain_ab.py /tmp/before .

Each repetition fills 2N one-job DAGs with the tree's own ``Client.submit_many`` and drains
them with that tree's ``InlineRunner`` (prefetch 1). Medians per tree at the end, and the
second tree against the first pair by pair (``paired``). The interleaving matters on a
shared VM, whose speed moves by tens of percent within minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import CpuWindow, ScratchServer

FILL = (
    "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/benchmarks']\n"
    "from pipeline.client import Client\nfrom pipeline.connection import connect\n"
    "from mediapipe_proc import _dag, noop_registry\n"
    "c = Client(connect(sys.argv[2], namespace='ab'), namespace='ab', registry=noop_registry())\n"
    "n = int(sys.argv[3])\n"
    "for i in range(0, n, 1000): c.submit_many([_dag(j) for j in range(i, min(i + 1000, n))])\n"
)


def drain(
    tree: str,
    url: str,
    r: redis.Redis,
    n: int,
    *,
    until_empty: bool = False,
    window: CpuWindow | None = None,
) -> tuple[float, float]:
    """Fill 2n one-job DAGs with ``tree``'s code and drain them with 2 of its workers:
    (jobs/s, FCALL microseconds a job). Each worker runs n jobs, or with ``until_empty``
    (a tree whose noop_drain.py has ``all``) as many as it takes until the queue is empty.
    ``window`` is started at the start signal and stopped once both workers reported; its
    ``workers_s`` gets the CPU seconds the workers reported (0 for a tree whose
    noop_drain.py does not report it)."""
    r.flushall()
    subprocess.run([sys.executable, "-c", FILL, tree, url, str(2 * n)], check=True)
    drain = str(Path(tree) / "benchmarks" / "noop_drain.py")
    procs = [
        subprocess.Popen(
            [sys.executable, drain, url, "ab", "1", "all" if until_empty else str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    r.config_resetstat()
    if window:
        window.start()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    out = [json.loads(p.stdout.readline()) for p in procs if p.stdout is not None]
    if window:
        window.stop()
        window.workers_s = sum(x.get("cpu", 0.0) for x in out)
    for p in procs:
        p.wait()
    done = sum(x["processed"] for x in out)
    if done != 2 * n:
        raise RuntimeError(f"{tree}: {done} jobs processed, not {2 * n}")
    rate = done / (max(x["end"] for x in out) - min(x["start"] for x in out))
    stats = r.info("commandstats")
    return rate, float(stats["cmdstat_fcall"]["usec"]) / (2 * n)


def paired(
    a: list[tuple[float, float]],
    b: list[tuple[float, float]],
    names: tuple[str, str] = ("first", "second"),
) -> str:
    """The two trees' rates compared repetition by repetition (each pair ran back to back,
    so it shares the VM's conditions): the median of b / a, its quartiles, b's wins."""
    ratios = sorted(y[0] / x[0] for x, y in zip(a, b, strict=True))
    q = len(ratios) // 4
    return (
        f"paired ({len(ratios)} reps): {names[1]} / {names[0]} median "
        f"{statistics.median(ratios):.3f} (quartiles {ratios[q]:.3f}..{ratios[-1 - q]:.3f}); "
        f"{names[1]} faster in "
        f"{sum(r > 1 for r in ratios)} of {len(ratios)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs=2)
    ap.add_argument("--n", type=int, default=10000, help="jobs per worker")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--server", default="/usr/bin/redis-server")
    a = ap.parse_args()
    trees = [str(Path(t).resolve()) for t in a.trees]
    srv = ScratchServer(a.server)
    url, r = srv.url, srv.r
    results: dict[str, list[tuple[float, float]]] = {t: [] for t in trees}
    try:
        for rep in range(a.reps):
            for tree in trees if rep % 2 == 0 else trees[::-1]:
                rate, us = drain(tree, url, r, a.n)
                results[tree].append((rate, us))
                print(f"rep {rep} {tree}: {rate:,.0f} jobs/s, FCALL {us:.1f} us a job", flush=True)
        for tree in trees:
            xs = results[tree]
            print(
                f"{tree}: median {statistics.median(x[0] for x in xs):,.0f} jobs/s, "
                f"FCALL {statistics.median(x[1] for x in xs):.1f} us a job"
            )
        print(paired(results[trees[0]], results[trees[1]]))
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
