"""Redis memory per waiting DAG: one no-op job, a photo and a video of the default presets.

usage: python benchmarks/layout_memory.py [--redis-server PATH] [--n 20000]

A fresh server for each kind (no persistence, a free port); one DAG first, so the
namespace-wide keys exist, then N one-job DAGs (N/2 photos, N/5 videos) with
``Client.submit_many`` and reads ``INFO memory`` ``used_memory`` before and after; prints
bytes and keys per waiting DAG as JSON. Nothing is probed: the DAGs are built from the
presets as ``mediapipe submit`` builds them, for made-up paths.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import stages  # noqa: F401  (registers the stages the presets name)
from benchmarks.common import ScratchServer
from mediajobs import presets
from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import REGISTRY, Registry, stage


def noop(i: int) -> Dag:
    dag = Dag()
    dag.add("noop", "noop", {"i": i, "op": "noop", "src": f"media/clip_{i:06d}.mp4"})
    return dag


def photo(i: int) -> Dag:
    return presets.build_dag(
        f"/data/in/photo_{i:06d}.jpg", f"/data/out/photo_{i:06d}", presets.load("image")
    )


def video(i: int) -> Dag:
    return presets.build_dag(
        f"/data/in/clip_{i:06d}.mp4", f"/data/out/clip_{i:06d}", presets.load("video")
    )


def measure(binary: str, make: Callable[[int], Dag], n: int, registry: Registry) -> dict[str, Any]:
    # A fresh server per measurement: after FLUSHALL, some allocators (the embedded Valkey
    # is built with libc malloc) report memory freed late, which skews the next one.
    srv = ScratchServer(binary)
    try:
        r = srv.r
        client = Client(r, registry=registry)
        client.submit(make(-1))
        before = int(r.info("memory")["used_memory"])
        keys_before = int(r.dbsize())
        dags = [make(i) for i in range(n)]
        for k in range(0, n, 1000):
            client.submit_many(dags[k : k + 1000])
        after = int(r.info("memory")["used_memory"])
        return {
            "server": r.info("server").get("redis_version"),
            "dags": n,
            "jobs_per_dag": len(dags[0].nodes),
            "bytes_per_dag": round((after - before) / n),
            "keys_per_dag": round((int(r.dbsize()) - keys_before) / n, 2),
        }
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-server", default="/usr/bin/redis-server")
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args()
    noops = Registry()

    @stage("noop", registry=noops)
    def _noop(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        return None

    out = {
        "noop": measure(args.redis_server, noop, args.n, noops),
        "photo": measure(args.redis_server, photo, args.n // 2, REGISTRY),
        "video": measure(args.redis_server, video, args.n // 5, REGISTRY),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
