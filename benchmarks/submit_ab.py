"""One-at-a-time enqueue, two checkouts and huey side by side on one server: each
repetition runs huey's task call loop and each tree's ``Client.submit`` loop (one no-op
job per DAG, the queue benchmark's payload), alternating, and prints jobs/s with the
client's user and system CPU a call; medians at the end, and the second tree against the
first and against huey pair by pair.

    python benchmarks/submit_ab.py TREE_A TREE_B [--n 3000] [--reps 8]
        [--server /usr/bin/redis-server] [--peer-python /tmp/peerbench/bin/python]
    e.g. git worktree add /tmp/before HEAD~1
         python benchmarks/submit_ab.py /tmp/before .

huey comes from the peer benchmarks' virtual environment (``--peer-python``, made by
``../shared/bench/peers/setup_venvs.sh``) with their ``tasks_huey.py`` (``--peers-dir``);
without it only the trees run. The queue is flushed before every loop, so each starts
from an empty one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ScratchServer
from benchmarks.drain_ab import paired

# Run in a process of its own per loop: the tree's (or huey's) code, warm-up first, then
# N calls timed, one JSON line out.
LOOP = r"""
import json, os, resource, sys, time
who, n = sys.argv[1], int(sys.argv[2])
def payload(i):
    return {"i": i, "op": "noop", "src": "media/clip_%06d.mp4" % i}
if who == "huey":
    from tasks_huey import huey, noop
    huey.storage.conn.ping()
    call = lambda i: noop(payload(i))
else:
    sys.path[:0] = [who, who + "/benchmarks"]
    from pipeline.client import Client
    from pipeline.connection import connect
    from mediapipe_proc import _dag, noop_registry
    client = Client(connect(os.environ["PEERBENCH_REDIS_URL"]), registry=noop_registry())
    call = lambda i: client.submit(_dag(i))
for i in range(200):
    call(10**6 + i)
ru, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for i in range(n):
    call(i)
wall, ru2 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rate": n / wall, "user_us": (ru2.ru_utime - ru.ru_utime) / n * 1e6,
                  "sys_us": (ru2.ru_stime - ru.ru_stime) / n * 1e6}))
"""


def loop(python: str, who: str, n: int, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [python, "-c", LOOP, who, str(n)], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs=2)
    ap.add_argument("--n", type=int, default=3000, help="submits per loop")
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--server", default="/usr/bin/redis-server")
    ap.add_argument("--peer-python", default="/tmp/peerbench/bin/python")
    ap.add_argument(
        "--peers-dir", default=str(Path(__file__).resolve().parents[2] / "shared/bench/peers")
    )
    a = ap.parse_args()
    trees = [str(Path(t).resolve()) for t in a.trees]
    runners = [(t, sys.executable) for t in trees]
    if Path(a.peer_python).exists() and (Path(a.peers_dir) / "tasks_huey.py").exists():
        runners.insert(0, ("huey", a.peer_python))
    else:
        print(f"huey left out: no {a.peer_python} or {a.peers_dir}/tasks_huey.py", flush=True)
    srv = ScratchServer(a.server)
    env = dict(os.environ, PEERBENCH_REDIS_URL=srv.url, PYTHONPATH=a.peers_dir)
    # (submits/s, client CPU us a call) per repetition; paired() compares the first
    results: dict[str, list[tuple[float, float]]] = {who: [] for who, _ in runners}
    try:
        for rep in range(a.reps):
            order = runners if rep % 2 == 0 else runners[::-1]
            for who, python in order:
                srv.r.flushall()
                x = loop(python, who, a.n, env)
                results[who].append((x["rate"], x["user_us"] + x["sys_us"]))
                print(
                    f"rep {rep} {who}: {x['rate']:,.0f} submits/s, client CPU "
                    f"{x['user_us']:.0f} us user + {x['sys_us']:.0f} us system a call",
                    flush=True,
                )
        for who, _ in runners:
            rates, cpu = zip(*results[who], strict=True)
            print(
                f"{who}: median {statistics.median(rates):,.0f} submits/s, "
                f"{statistics.median(cpu):.0f} us of client CPU a call"
            )
        print(paired(results[trees[0]], results[trees[1]], ("A", "B")))
        if "huey" in results:
            for t, name in zip(trees, ("A", "B"), strict=True):
                print(paired(results["huey"], results[t], ("huey", name)))
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
