"""What moves the no-op drain's jobs/s on this machine: the tree as it is against a copy
with a known cost added on one side of the cycle, the two alternating on one server.

    python benchmarks/sensitivity.py server 5000 [--n 6000] [--reps 24]
    python benchmarks/sensitivity.py worker 25 [--n 6000] [--reps 24]

- ``server LOOPS``: the copy's ``complete`` transition (the complete+claim FCALL of every
  job) first runs an empty Lua loop of LOOPS turns; the report gives the FCALL's server
  microseconds a job of each side, so the cost added is measured, not assumed.
- ``worker US``: the copy's ``InlineRunner`` busy-waits US microseconds before each job,
  between reading a reply and sending the next call (a worker's own work on the path).

Each repetition is ``drain_ab.drain``: 2N one-job DAGs filled, then drained by 2
``noop_drain.py`` processes of that tree. The report pairs the two sides of each
repetition (run back to back, their order alternating) and gives the median of the paired
ratios (copy / tree) and how many the copy won; on a VM whose speed moves by tens of
percent within minutes, a pair is what shares its conditions. The copy lives in a
temporary directory and is removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ScratchServer
from benchmarks.drain_ab import drain, paired

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "workers", "stages", "mediajobs", "benchmarks")

# (file, the line the cost goes after, the cost with {amount} in it)
PERTURB = {
    "server": (
        "pipeline/scripts/complete.lua",
        "local now, at = clock()\n",
        "do local x = 0 for i = 1, {amount} do x = x + i end end\n",
    ),
    "worker": (
        "workers/inline.py",
        "    def _run_one(self, job: ClaimedJob) -> None:\n",
        "        _until = time.perf_counter() + {amount} / 1e6\n"
        "        while time.perf_counter() < _until:\n"
        "            pass\n",
    ),
}


def perturbed_copy(side: str, amount: int, into: Path) -> Path:
    """A copy of this tree's packages with the cost of ``side`` added."""
    for pkg in PACKAGES:
        shutil.copytree(
            REPO / pkg, into / pkg, ignore=shutil.ignore_patterns("__pycache__", "results")
        )
    rel, anchor, cost = PERTURB[side]
    path = into / rel
    text = path.read_text()
    if text.count(anchor) != 1:
        raise SystemExit(f"{rel}: the line the cost goes after is not there once: {anchor!r}")
    path.write_text(text.replace(anchor, anchor + cost.format(amount=amount)))
    return into


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("side", choices=sorted(PERTURB))
    ap.add_argument("amount", type=int, help="Lua loop turns (server) or microseconds (worker)")
    ap.add_argument("--n", type=int, default=6000, help="jobs per worker")
    ap.add_argument("--reps", type=int, default=24)
    ap.add_argument("--server", default="/usr/bin/redis-server")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
        trees = [str(REPO), str(perturbed_copy(a.side, a.amount, Path(tmp)))]
        names = {trees[0]: "tree", trees[1]: f"+{a.side} {a.amount}"}
        srv = ScratchServer(a.server)
        runs: dict[str, list[tuple[float, float]]] = {t: [] for t in trees}
        try:
            for rep in range(a.reps):
                for tree in trees if rep % 2 == 0 else trees[::-1]:
                    rate, us = drain(tree, srv.url, srv.r, a.n)
                    runs[tree].append((rate, us))
                    print(
                        f"rep {rep} {names[tree]}: {rate:,.0f} jobs/s, FCALL {us:.1f} us a job",
                        flush=True,
                    )
        finally:
            srv.stop()
    for tree in trees:
        xs = runs[tree]
        print(
            f"{names[tree]}: median {statistics.median(x[0] for x in xs):,.0f} jobs/s, "
            f"FCALL {statistics.median(x[1] for x in xs):.1f} us a job"
        )
    print(paired(runs[trees[0]], runs[trees[1]], ("tree", "the copy")))


if __name__ == "__main__":
    main()
