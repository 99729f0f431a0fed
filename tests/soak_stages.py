"""Stages of the fault soak (tests/faultsoak.py): each run of ``soak.tally`` leaves a start
line and, when it gets to the end, an end line in a tally file, so the harness can count
how many times a stage function started and finished, by which process, and when.
``soak.blob`` writes a file of seeded random bytes (large enough to go multipart) and
publishes it to the job's storage target as the media stages do."""

from __future__ import annotations

import functools
import hashlib
import os
import random
import time
from pathlib import Path
from typing import Any

from pipeline.registry import REGISTRY, stage
from stages.outputs import declare_output_keys
from stages.storage import stores_outputs

declare_output_keys(("blob",))


def _line(path: str, kind: str, ctx: Any) -> None:
    with open(Path(path), "a") as f:  # one short append: atomic on Linux
        f.write(f"{kind} {ctx.job.id} {ctx.job.attempt} {os.getpid()} {time.time():.6f}\n")


@stage("soak.tally", registry=REGISTRY, attempts=6)
def tally(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    _line(params["tally"], "S", ctx)
    seconds = float(params.get("seconds", 0))
    steps = max(1, int(seconds / 0.05))
    for i in range(steps):
        time.sleep(seconds / steps)
        if i % 4 == 3:
            ctx.progress(100 * (i + 1) / steps, "working")
    _line(params["tally"], "E", ctx)
    return {"n": params["n"], "inputs": sorted(inputs)}


def blob_bytes(seed: int, size: int) -> bytes:
    """What ``soak.blob`` writes for ``seed``: the harness checks the stored object against
    it byte for byte."""
    return random.Random(seed).randbytes(size)


# Decorated in place, not wrapped under another name: a pool child finds the function to
# run by its module and qualified name, which the wrappers keep.
@stage("soak.blob", registry=REGISTRY, attempts=6)
@functools.partial(stores_outputs, outputs=("blob",))
def blob(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    out = Path(params["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    data = blob_bytes(int(params["seed"]), int(params["bytes"]))
    path = out / "blob.bin"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    return {"blob": {"path": str(path), "bytes": len(data), "sha256": digest}}


def read_tally(path: Path) -> dict[str, list[tuple[str, int, int, float]]]:
    """job id -> its lines as (kind, attempt, pid, time), in file order."""
    out: dict[str, list[tuple[str, int, int, float]]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 5:
                continue  # a line cut by a kill mid-write
            kind, job, attempt, pid, t = parts
            out.setdefault(job, []).append((kind, int(attempt), int(pid), float(t)))
    return out
