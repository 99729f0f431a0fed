"""Pool children log at the parent's level: a debug line from a stage reaches stderr."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PARENT = textwrap.dedent(
    """
    import logging, sys
    from pipeline.jobs import ClaimedJob
    from pipeline.model import Backoff
    from workers import wire
    from workers.pool import Pool

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)  # as `submit --debug` does
    pool = Pool(1)
    child = pool.children[0]
    job = ClaimedJob(id="d/j", queue="default", token="t", stage="s", params={"word": "hello"},
                     dag_id="d", name="j", attempt=1, max_attempts=1, timeout=30.0, cost=1,
                     backoff=Backoff())
    pool.start(child, "tests.workers.logging_stage:logs_at_debug", job, 1, 0.0)
    while (msg := wire.recv(child.conn))[0] not in ("done", "error"):
        pass
    print(msg[0])
    pool.close()
    """
)


def test_a_child_logs_at_the_level_the_parent_set() -> None:
    res = subprocess.run(
        [sys.executable, "-c", PARENT], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert res.stdout.strip() == "done", res.stderr
    assert "child says hello" in res.stderr
