"""One no-op drain process for the depth and concurrency comparisons of ``run.py``.

usage: python benchmarks/noop_drain.py URL NAMESPACE PREFETCH JOBS

Sets up a ``Broker`` and an ``InlineRunner`` over a registry with the ``noop`` stage of
``mediapipe_proc.py``, prints ``ready``, waits for a line on stdin (the start signal,
so several processes start together), then runs exactly JOBS jobs (claim + run + complete,
PREFETCH jobs claimed per round trip) and prints one JSON line: wall-clock start and end
(``time.time()``, so several processes share one clock) and the jobs processed.
Prefetched jobs left unrun at the end are handed back to the queue by the runner.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediapipe_proc import noop_registry

from pipeline.broker import Broker
from pipeline.connection import connect
from workers.inline import InlineRunner


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        raise SystemExit(__doc__)
    url, namespace, prefetch, jobs = argv[0], argv[1], int(argv[2]), int(argv[3])
    logging.basicConfig(level=logging.WARNING)
    reg = noop_registry()
    broker = Broker(connect(url, namespace=namespace), namespace=namespace, registry=reg)
    runner = InlineRunner(broker, ["default"], registry=reg, prefetch=prefetch)
    print("ready", flush=True)
    if not sys.stdin.readline():
        raise SystemExit("no start signal")
    t0 = time.time()
    processed = runner.run(lambda: False, max_jobs=jobs)
    t1 = time.time()
    print(json.dumps({"start": t0, "end": t1, "processed": processed}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
