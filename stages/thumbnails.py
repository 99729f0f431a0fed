"""video_poster and video_sprite: a representative still, and a strip of thumbnails.

The poster skips black or flat frames (a fade-in, a black leader): a few candidate times
are decoded at a tiny size and the first whose luma is bright and varied enough wins.
The picture itself is then cut by ffmpeg, which applies the display rotation; HDR and
BT.2020 video is converted to BT.709 SDR first, as for the ladder (stages/color.py), and
the JPEGs carry none of the source's metadata.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.color import to_sdr, video_color
from stages.contract import media_stage
from stages.ffmpeg_run import compile_cmd, run, safe_input, strip_metadata
from stages.limits import SAFE_DEMUXERS, SAFE_PROTOCOLS
from stages.media_facts import image_facts
from stages.output import atomic_output, output_name, output_path
from stages.params import MAX_DIMENSION, integer, number, param

MIN_MEAN_LUMA = 32.0  # out of 255: darker frames count as black
MIN_LUMA_SPREAD = 8.0  # standard deviation: flatter frames count as blank


def pick_poster_time(path: str, duration: float | None, candidates: int = 8) -> float:
    """The first candidate time whose frame is neither black nor flat (else the brightest)."""
    import av

    span = duration or 0.0
    times = [span * (i + 0.5) / candidates for i in range(candidates)] if span else [0.0]
    best, best_mean = times[0], -1.0
    with av.open(
        path, options={"format_whitelist": SAFE_DEMUXERS, "protocol_whitelist": SAFE_PROTOCOLS}
    ) as c:
        stream = c.streams.video[0]
        for t in times:
            c.seek(int(t * 1_000_000), any_frame=False, backward=True)
            frame = next(
                (f for f in c.decode(stream) if f.time is None or f.time >= t - 0.05), None
            )
            if frame is None:
                continue
            small = frame.reformat(width=64, height=36, format="gray")
            plane = small.planes[0]
            luma = [
                b
                for row in range(36)
                for b in bytes(plane)[row * plane.line_size : row * plane.line_size + 64]
            ]
            mean, spread = statistics.fmean(luma), statistics.pstdev(luma)
            if mean >= MIN_MEAN_LUMA and spread >= MIN_LUMA_SPREAD:
                return round(t, 3)
            if mean > best_mean:
                best, best_mean = t, mean
    return round(best, 3)


@dataclass(frozen=True)
class PosterParams:
    width: int = param(1280, integer(16, MAX_DIMENSION), "at most; never wider than the video")


@media_stage(
    "video_poster",
    params=PosterParams,
    needs=("probe",),
    outputs=("poster",),
    kinds=("video",),
    timeout=600,
)
def video_poster(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:

    probe = inputs["probe"]
    src = params["input"]
    name = output_name(params.get("name") or Path(src).stem)
    width = min(int(params["width"]), probe["width"])
    at = pick_poster_time(src, probe.get("duration"))
    final = output_path(params["out_dir"], f"{name}_poster.jpg")
    with atomic_output(final) as tmp:
        graph = (
            to_sdr(safe_input(src, ss=at).video, video_color(src))
            .filter("scale", width, -2)
            .filter("format", "yuvj420p")
            .output(str(tmp), vframes=1, q=3, f="image2", **strip_metadata(False))
        )
        run(compile_cmd(graph), source=src)
    ctx.progress(100, "poster")
    return {"poster": image_facts(final, "jpeg", at=at)}


@dataclass(frozen=True)
class SpriteParams:
    every: float = param(2.0, number(0.5, 3600), "seconds between thumbnails")
    width: int = param(160, integer(16, 1024), "of each thumbnail")
    columns: int = param(10, integer(1, 100), "thumbnails per row, at most")


@media_stage(
    "video_sprite",
    params=SpriteParams,
    needs=("probe",),
    outputs=("sprite",),
    kinds=("video",),
    timeout=1800,
)
def video_sprite(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    probe = inputs["probe"]
    src = params["input"]
    name = output_name(params.get("name") or Path(src).stem)
    every = float(params["every"])
    tile_w = int(params["width"])
    duration = probe.get("duration") or every
    count = max(1, math.ceil(duration / every))
    columns = min(count, int(params["columns"]))
    rows = math.ceil(count / columns)
    final = output_path(params["out_dir"], f"{name}_sprite.jpg")
    with atomic_output(final) as tmp:
        graph = (
            to_sdr(safe_input(src).video, video_color(src))
            # eof_action=pass: a clip shorter than half an interval still gives its one
            # frame (the default rounding left such a sprite empty and ffmpeg wrote none).
            .filter("fps", f"1/{every}", eof_action="pass")
            .filter("scale", tile_w, -2)
            .filter("tile", f"{columns}x{rows}")
            # Full-range 8-bit, what the JPEG encoder takes: from 10-bit input (HDR, or
            # SDR from a phone) ffmpeg would otherwise pick limited range, which it refuses.
            .filter("format", "yuvj420p")
            .output(str(tmp), vframes=1, q=4, f="image2", **strip_metadata(False))
        )
        run(
            compile_cmd(graph), source=src, duration=duration, progress=ctx.progress, label="sprite"
        )
    tile_h = probe["height"] * tile_w // probe["width"] // 2 * 2
    return {
        "sprite": image_facts(
            final,
            "jpeg",
            every=every,
            columns=columns,
            rows=rows,
            count=count,
            tile_width=tile_w,
            tile_height=tile_h,
        )
    }
