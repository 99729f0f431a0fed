"""Stages for the dashboard's browser tests: one whose failure an operator can fix (so
retrying it from the dashboard succeeds), a transcode that reports fps and eta, and a
poster that fails once and then writes an image.

Workers load it with ``--import tests.dashboard.dash_stages``.
"""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path
from typing import Any

from pipeline.errors import PermanentError
from pipeline.registry import REGISTRY, stage


@stage("dash.needs_fix", registry=REGISTRY, attempts=2)
def needs_fix(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Fails permanently (straight to the dead-letter queue) until the ``fixed`` file exists."""
    if not Path(params["fixed"]).exists():
        raise PermanentError(f"{params['path']}: not a media file")
    return {"path": params["path"]}


@stage("dash.transcode", registry=REGISTRY)
def transcode(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Reports progress the way the ladder does (fps, speed, eta) for ``seconds``."""
    steps = max(1, int(params["seconds"] / 0.1))
    for i in range(steps):
        time.sleep(params["seconds"] / steps)
        left = params["seconds"] * (steps - i - 1) / steps
        ctx.progress(100 * (i + 1) / steps, "encoding", fps="30", speed="1.00", eta=f"{left:.1f}")
    return {"frames": steps}


@stage("dash.flaky_poster", registry=REGISTRY, attempts=3)
def flaky_poster(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Fails its first attempt (a retryable error), then writes a PNG into ``out_dir``."""
    if ctx.attempt == 1:
        raise OSError("the output disk went away while writing the poster")
    out = Path(params["out_dir"]) / "poster.png"
    out.write_bytes(png(160, 90, (40, 110, 220)))
    return {"path": str(out), "bytes": out.stat().st_size, "width": 160, "height": 90}


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG, made without an image library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\0" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )
