"""The long fault soak: tests/faultsoak.py for minutes instead of seconds.

    python benchmarks/fault_soak.py --minutes 10 --dags 1000 --seed 7 [--mode both]
        [--workers 2] [--concurrency 2] [--lease 4] [--fsync always] [--json out.json]
        [--s3-every 2] [--blob-every 16]

``--mode both`` (the default) spends half the minutes (and half the DAGs) on network
faults only and half on every fault. Prints each run's report (fault counts, DAGs, runs,
invariant violations) and exits 1 if any invariant failed. Figures go into docs/faults.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.faultsoak import Soak, SoakConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="of faults, all modes together")
    ap.add_argument("--dags", type=int, default=1000, help="at least this many, all modes")
    ap.add_argument("--mode", choices=("network", "all", "both"), default="both")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--lease", type=float, default=4.0)
    ap.add_argument("--in-flight", type=int, default=6)
    ap.add_argument("--fault-interval", type=float, default=1.5, help="mean seconds")
    ap.add_argument("--fsync", choices=("always", "everysec"), default="always")
    ap.add_argument("--retention-age", type=float, default=20.0)
    ap.add_argument("--s3-every", type=int, default=2, help="every n-th image DAG to S3; 0 none")
    ap.add_argument("--blob-every", type=int, default=16, help="every n-th DAG a multipart blob")
    ap.add_argument("--json", type=Path, help="write the reports here")
    args = ap.parse_args(argv)
    modes = ["network", "all"] if args.mode == "both" else [args.mode]
    reports = []
    started = time.time()
    for i, mode in enumerate(modes):
        cfg = SoakConfig(
            mode=mode,
            seconds=args.minutes * 60 / len(modes),
            min_dags=-(-args.dags // len(modes)),
            seed=args.seed + i,
            workers=args.workers,
            concurrency=args.concurrency,
            lease=args.lease,
            in_flight=args.in_flight,
            fault_interval=args.fault_interval,
            fsync=args.fsync,
            retention_age=args.retention_age,
            s3_every=args.s3_every,
            blob_every=args.blob_every,
        )
        report = Soak(cfg).run()
        print(report.text(), flush=True)
        print(flush=True)
        reports.append(report)
    out = {
        "command": " ".join(["python", "benchmarks/fault_soak.py", *(argv or sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "reports": [json.loads(r.as_json()) for r in reports],
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 1 if any(r.violations for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
