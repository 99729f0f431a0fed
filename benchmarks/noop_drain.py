"""One no-op drain process for the depth and concurrency comparisons of ``run.py``.

usage: python benchmarks/noop_drain.py URL NAMESPACE PREFETCH JOBS|all

Sets up a ``Broker`` and an ``InlineRunner`` over a registry with the ``noop`` stage of
``mediapipe_proc.py``, prints ``ready``, waits for a line on stdin (the start signal,
so several processes start together), then runs exactly JOBS jobs (claim + run + complete,
PREFETCH jobs claimed per round trip) and prints one JSON line: wall-clock start and end
(``time.time()``, so several processes share one clock), the jobs processed and the CPU
seconds the run took (user and system, ``time.process_time()``).
Prefetched jobs left unrun at the end are handed back to the queue by the runner.
``all``: run until a claim finds the queue empty, as a BRPOP loop drains a list, so
several processes share the jobs as their speed has it (a fixed count each leaves the
slowest one running alone at the end).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediapipe_proc import noop_registry

from pipeline.broker import Broker
from pipeline.connection import connect
from workers.inline import InlineRunner


class UntilEmpty(InlineRunner):
    """Stops (``empty``) at the first claim that finds nothing, instead of waiting."""

    empty = False

    def _refill(self, now: float, next_stall_check: float) -> bool:
        if self._done:
            self._flush(fetch=True)
        else:
            self._take(self.broker.claim(self.queues, self.prefetch)[0])
        self.empty = not self._held
        return not self.empty


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        raise SystemExit(__doc__)
    url, namespace, prefetch = argv[0], argv[1], int(argv[2])
    jobs = None if argv[3] == "all" else int(argv[3])
    logging.basicConfig(level=logging.WARNING)
    reg = noop_registry()
    broker = Broker(connect(url, namespace=namespace), namespace=namespace, registry=reg)
    runner: InlineRunner
    stop: Callable[[], bool]
    if jobs is None:
        until = runner = UntilEmpty(broker, ["default"], registry=reg, prefetch=prefetch)
        stop = lambda: until.empty  # noqa: E731
    else:
        runner = InlineRunner(broker, ["default"], registry=reg, prefetch=prefetch)
        stop = lambda: False  # noqa: E731
    print("ready", flush=True)
    if not sys.stdin.readline():
        raise SystemExit("no start signal")
    t0, c0 = time.time(), time.process_time()
    processed = runner.run(stop, max_jobs=jobs)
    t1, cpu = time.time(), time.process_time() - c0
    print(json.dumps({"start": t0, "end": t1, "processed": processed, "cpu": cpu}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
