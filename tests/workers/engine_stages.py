"""Stage functions for the engine fault tests (importable by pool children)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.model import Backoff
from pipeline.registry import REGISTRY, stage


@stage("t.fill", registry=REGISTRY, attempts=2, backoff=Backoff(base=0.05, jitter=0))
def fill(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
    """Writes ``size`` bytes to ``path`` through the atomic output path the media stages use."""
    from stages.output import atomic_output

    final = Path(params["path"])
    with atomic_output(final) as tmp, open(tmp, "wb") as f:
        for _ in range(int(params["size"]) // 4096):
            f.write(b"x" * 4096)
    return str(final)


@stage("t.scratch", registry=REGISTRY, attempts=2, backoff=Backoff(base=0.05, jitter=0))
def scratch(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
    """Writes a scratch file where it is told to, with no help from stages.output."""
    with open(params["scratch"], "wb") as f:
        f.write(b"x" * int(params["size"]))
    return "written"
