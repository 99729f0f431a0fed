"""Stages the fault tests run: each run leaves a line in a tally file, so a test can
count how many times a stage function really ran."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pipeline.registry import REGISTRY, stage


def _tally(ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
    start = time.time()
    steps = max(1, int(params.get("seconds", 0) / 0.05))
    for _ in range(steps):
        time.sleep(params.get("seconds", 0) / steps)
    with open(Path(params["tally"]), "a") as f:  # one short append: atomic on Linux
        f.write(f"{ctx.job.id} {ctx.job.attempt} {os.getpid()}\n")
    return {"n": params.get("n"), "start": start, "end": time.time()}


@stage("f.tally", registry=REGISTRY, attempts=3)
def tally(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    return _tally(ctx, params)


@stage("f.gpu_tally", registry=REGISTRY, attempts=3, tags=("gpu",))
def gpu_tally(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    return _tally(ctx, params)


def runs(tally_file: Path) -> dict[str, int]:
    """How many times each job's stage function ran to the end."""
    out: dict[str, int] = {}
    if tally_file.exists():
        for line in tally_file.read_text().splitlines():
            job = line.split()[0]
            out[job] = out.get(job, 0) + 1
    return out


@stage("f.pickle_to_parent", registry=REGISTRY, attempts=2)
def pickle_to_parent(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
    """What a pool child taken over through a decoder could do: send its parent a pickle
    (here a harmless one that would create a file when unpickled) instead of a message."""
    import pickle

    if ctx.job.attempt == 1:
        evil = pickle.dumps(_Touch(params["marker"]))
        ctx._reporter.conn.send_bytes(evil)
        time.sleep(5)  # the parent must not wait for anything more from this child
    return "second attempt"


class _Touch:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.path),))


_down_once: set[str] = set()


@stage("f.service_down_once", registry=REGISTRY, attempts=1)
def service_down_once(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
    from pipeline.errors import ServiceUnavailableError

    marker = Path(params["marker"])
    if not marker.exists():
        marker.write_text("down once")
        raise ServiceUnavailableError("storage is down", retry_after=0.1)
    return ctx.job.attempt
