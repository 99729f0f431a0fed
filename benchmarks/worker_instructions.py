"""A worker's own instructions per no-op job, counted by valgrind: the client-side
companion of server_instructions.py, and as steady (two runs of one tree agree within
0.1 %, where timings on this VM move by 20 %).

    python benchmarks/worker_instructions.py SOURCE_TREE [--n 2000] [--server redis-server]
    e.g. python benchmarks/worker_instructions.py .
    python benchmarks/worker_instructions.py SOURCE_TREE --canned --n 10000

``--canned`` counts the worker's Python alone: ``worker_loop.py``'s runner answered at
once with a recorded complete+claim reply, no socket and no timed chores.

Fills a scratch server with one-job DAGs (``SOURCE_TREE``'s ``Client.submit_many``), runs
``SOURCE_TREE``'s ``noop_drain.py`` at prefetch 1 under ``valgrind --tool=callgrind`` for
500 jobs and for 500 + N, and prints the difference over N: start-up, imports and the
library load cancel out. The server runs natively; only the worker is counted. Run it on
an otherwise idle machine: the worker's timed chores (lease extension every 10 s, the
stall check every 15 s) are counted per second of a run that valgrind makes ~50x longer,
and a loaded machine makes it longer still (a run beside the test suite read 115,417
where an idle one read 108,542). Needs
valgrind (``apt-get install valgrind``). A checkout of another commit as SOURCE_TREE
compares two versions on one machine.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ScratchServer
from benchmarks.drain_ab import FILL

BASE = 500
VALGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")


def _callgrind(script: str, *args: str, stdin: str | None = None) -> int:
    """Instructions of one Python run of ``script``, counted by valgrind."""
    # the interpreter itself, not a launcher script that execs it (pyenv's shims)
    proc = subprocess.run(
        [*VALGRIND, sys.executable, script, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )
    m = re.search(r"Collected : (\d+)", proc.stderr)
    if not m:
        raise SystemExit(f"no instruction count from valgrind:\n{proc.stderr[-2000:]}")
    return int(m.group(1))


def _count(tree: str, url: str, r: object, jobs: int) -> int:
    r.flushall()  # type: ignore[attr-defined]
    subprocess.run([sys.executable, "-c", FILL, tree, url, str(jobs)], check=True)
    drain = str(Path(tree) / "benchmarks" / "noop_drain.py")
    return _callgrind(drain, url, "ab", "1", str(jobs), stdin="go\n")


def _count_canned(tree: str, server: str, jobs: int) -> int:
    """The worker's Python alone: ``worker_loop.py``'s runner on a recorded reply."""
    loop = str(Path(__file__).resolve().parent / "worker_loop.py")
    return _callgrind(loop, tree, "--n", str(jobs), "--reps", "1", "--server", server)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tree")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--server", default="redis-server")
    ap.add_argument(
        "--canned",
        action="store_true",
        help="no socket: worker_loop.py's runner answered with a recorded reply",
    )
    a = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    tree = str(Path(a.tree).resolve())
    if a.canned:
        server = shutil.which(a.server) or a.server
        low, high = _count_canned(tree, server, BASE), _count_canned(tree, server, BASE + a.n)
        print(f"{tree}: {(high - low) / a.n:,.0f} worker instructions a no-op job, canned, N={a.n}")
        return
    srv = ScratchServer(shutil.which(a.server) or a.server)
    try:
        low = _count(tree, srv.url, srv.r, BASE)
        high = _count(tree, srv.url, srv.r, BASE + a.n)
    finally:
        srv.stop()
    print(f"{tree}: {(high - low) / a.n:,.0f} worker instructions a no-op job, N={a.n}")


if __name__ == "__main__":
    main()
