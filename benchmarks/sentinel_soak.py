"""Acknowledged submits across repeated Sentinel failovers, with and without
``MEDIAPIPE_DURABLE``.

A cell of real valkey-server processes on 127.0.0.1 (tests/sentinel_cell.py: a master, two
replicas, three sentinels with ``down-after-milliseconds 1000``). A client submits one-job
DAGs in a loop through ``redis+sentinel://`` and records every submit that returned; every
``--every`` seconds the master is SIGKILLed, a replica is promoted and the killed node
comes back as a replica. After ``--failovers`` of them, every recorded DAG is looked up
on the last master: one that is missing is an acknowledged submit lost. Run once with
``MEDIAPIPE_DURABLE=0`` and once with 1 (each submit waits for one replica before it
returns), on fresh cells.

    python benchmarks/sentinel_soak.py --failovers 20 [--every 2.0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.client import Client  # noqa: E402
from pipeline.connection import client_from_url  # noqa: E402
from pipeline.model import Dag  # noqa: E402
from pipeline.registry import Registry, stage  # noqa: E402
from tests.sentinel_cell import Cell  # noqa: E402
from tests.workers.conftest import wait_for  # noqa: E402


def _registry() -> Registry:
    reg = Registry()

    @stage("noop", registry=reg)
    def noop(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        return 1

    return reg


def soak(durable: int, failovers: int, every: float) -> dict[str, Any]:
    os.environ["MEDIAPIPE_DURABLE"] = str(durable)
    with tempfile.TemporaryDirectory(prefix="sentinel-soak-") as tmp:
        cell = Cell(Path(tmp))
        try:
            wait_for(cell.ready, 30, "the cell")
            r = client_from_url(cell.url, socket_timeout=2, socket_connect_timeout=1)
            client = Client(r, namespace="soak", registry=_registry())
            acked: list[str] = []
            errors = 0
            stop = threading.Event()

            def submit_loop() -> None:
                nonlocal errors
                while not stop.is_set():
                    dag = Dag()
                    dag.add("a", "noop", {"n": len(acked)})
                    try:
                        client.submit(dag)
                    except Exception:  # refused or in doubt: not acknowledged
                        errors += 1
                        time.sleep(0.05)
                        continue
                    acked.append(dag.id)

            t = threading.Thread(target=submit_loop, daemon=True)
            started = time.monotonic()
            t.start()
            promotions = []
            for _ in range(failovers):
                time.sleep(every)
                _, took = cell.kill_master()
                promotions.append(round(took, 2))
                wait_for(cell.ready, 60, "the cell to heal")
            time.sleep(every)
            stop.set()
            t.join(30)
            elapsed = time.monotonic() - started
            lost = [d for d in acked if client.dag(d) is None]
            return {
                "durable_replicas": durable,
                "failovers": failovers,
                "acknowledged": len(acked),
                "lost": len(lost),
                "submit_errors": errors,
                "submits_per_s": round(len(acked) / elapsed, 1),
                "promotion_s_median": sorted(promotions)[len(promotions) // 2],
                "promotion_s_max": max(promotions),
            }
        finally:
            cell.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--failovers", type=int, default=20)
    ap.add_argument("--every", type=float, default=2.0, help="seconds between failovers")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [soak(d, args.failovers, args.every) for d in (0, 1)]
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for res in results:
            print(res)
    return 0 if results[1]["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
