"""probe: what an input is, from its header and first frame, before any heavy work.

Images are recognised by their magic bytes, never by their name, and opened with the one
allowed libvips loader those bytes name (stages/loaders.py): a file that starts like a
JPEG is a JPEG, and its errors are libjpeg's, not a demuxer's. Everything else is opened
with PyAV restricted to safe demuxers and the ``file`` protocol. Anything corrupt, and
anything this build cannot decode (a HEIF coded in HEVC), fails here as a permanent error
naming the file and the reason on one line, so the DAG stops before it writes a single
output.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

from pipeline.errors import BadInputError
from pipeline.registry import stage
from stages import loaders
from stages.contract import media_stage
from stages.limits import SAFE_DEMUXERS, SAFE_PROTOCOLS, MediaLimits
from stages.output import sha256_of


# Every DAG starts here (no kinds: presets do not choose it); its failure fails the DAG.
@media_stage("probe", essential=True, timeout=120, attempts=2)
def probe_stage(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    return probe(params["input"], MediaLimits.from_env())


KNOWN_FACTS = "known_facts"


@stage(KNOWN_FACTS, timeout=60)
def known_facts(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The probe's result for a DAG planned where its input was probed (the planner
    passes the facts on instead of probing the input twice)."""
    return dict(params["facts"])


def probe(path: str | os.PathLike[str], limits: MediaLimits | None = None) -> dict[str, Any]:
    limits = limits or MediaLimits()
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{p}: no such file")
    if p.is_dir():
        raise BadInputError(f"{p}: is a directory, not a media file")
    size = p.stat().st_size
    if size == 0:
        raise BadInputError(f"{p}: empty file (0 bytes)")
    facts: dict[str, Any] = {"path": str(p.resolve()), "bytes": size, "sha256": sha256_of(p)}
    loader = loaders.sniff_file(p)
    if loader is not None:
        facts.update(_probe_image(p, loader, limits))
    else:
        facts.update(_probe_av(p, limits))
    return facts


def _probe_image(p: Path, loader: str, limits: MediaLimits) -> dict[str, Any]:
    # Header only: libvips reads no pixels until asked.
    img = loaders.open_image(p, loader, access="sequential")
    fields = set(img.get_fields())
    orientation = int(img.get("orientation")) if "orientation" in fields else 1
    width, height = img.width, img.height
    pages = int(img.get("n-pages")) if "n-pages" in fields else 1
    if pages > 1 and "page-height" in fields:
        height = int(img.get("page-height"))
    pixels = width * height
    if pixels > limits.max_image_pixels:
        raise BadInputError(
            f"{p}: image of {width}x{height} = {pixels} pixels exceeds the "
            f"limit of {limits.max_image_pixels} pixels"
        )
    loaders.check_decodable(p, loader, img)
    name = loader.removesuffix("_source").removesuffix("load")
    display_w, display_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return {
        "kind": "image",
        "container": name,
        "codec": name,
        "width": display_w,
        "height": display_h,
        "stored_width": width,
        "stored_height": height,
        "rotation": {3: 180, 4: 180, 5: 90, 6: 90, 7: 270, 8: 270}.get(orientation, 0),
        "orientation": orientation,
        "pixels": pixels,
        "pages": pages,
        "bands": img.bands,
        "has_alpha": bool(img.hasalpha()),
        "interpretation": str(img.interpretation),
        "bit_depth": 16 if str(img.format) in ("ushort", "short") else 8,
        "has_icc_profile": "icc-profile-data" in fields,
        "duration": None,
        "fps": None,
        "audio": [],
    }


def _probe_av(p: Path, limits: MediaLimits) -> dict[str, Any]:
    import av

    try:
        container = av.open(
            str(p),
            options={"format_whitelist": SAFE_DEMUXERS, "protocol_whitelist": SAFE_PROTOCOLS},
        )
    except av.FFmpegError as exc:
        raise BadInputError(f"{p}: unsupported or corrupt media ({_av_reason(exc)})") from None
    with container:
        fmt = container.format.name
        audio = [
            {
                "codec": s.codec_context.name,
                "channels": s.codec_context.channels,
                "sample_rate": s.codec_context.sample_rate,
                "index": s.index,
            }
            for s in container.streams.audio
        ]
        duration = _duration(container)
        if duration is not None and duration > limits.max_duration:
            raise BadInputError(
                f"{p}: duration {duration:.0f}s exceeds the limit of {limits.max_duration:.0f}s"
            )
        videos = [
            s
            for s in container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic
        ]
        if not videos:
            if not audio:
                raise BadInputError(
                    f"{p}: unsupported media (container {fmt} has no audio or video stream)"
                )
            return {
                "kind": "audio",
                "container": fmt,
                "codec": None,
                "width": None,
                "height": None,
                "rotation": 0,
                "pixels": 0,
                "duration": duration,
                "fps": None,
                "audio": audio,
            }
        v = videos[0]
        width, height = v.codec_context.width, v.codec_context.height
        if not width or not height:
            raise BadInputError(f"{p}: corrupt video (no frame size)")
        if width * height > limits.max_video_pixels:
            raise BadInputError(
                f"{p}: video frame {width}x{height} exceeds the limit of "
                f"{limits.max_video_pixels} pixels"
            )
        rotation = _first_frame_rotation(container, v, p)
    rate: Fraction | None = v.average_rate or v.guessed_rate
    display_w, display_h = (height, width) if rotation in (90, 270) else (width, height)
    return {
        "kind": "video",
        "container": fmt,
        "codec": v.codec_context.name,
        "width": display_w,
        "height": display_h,
        "stored_width": width,
        "stored_height": height,
        "rotation": rotation,
        "pixels": width * height,
        "duration": duration,
        "fps": float(rate) if rate else None,
        "pix_fmt": v.codec_context.pix_fmt,
        "audio": audio,
    }


def _duration(container: Any) -> float | None:
    if container.duration:
        return float(container.duration) / 1_000_000
    for s in container.streams:
        if s.duration and s.time_base:
            return float(s.duration * s.time_base)
    return None


def _first_frame_rotation(container: Any, stream: Any, p: Path) -> int:
    """Decode the first frame: proves the video decodes, and carries the display rotation."""
    import av

    try:
        for frame in container.decode(stream):
            # PyAV reports the display matrix angle counter-clockwise; players rotate
            # the picture clockwise by the metadata "rotate" value, so normalise to that.
            return round(-frame.rotation) % 360 if frame.rotation else 0
    except av.FFmpegError as exc:
        raise BadInputError(f"{p}: corrupt video ({_av_reason(exc)})") from None
    raise BadInputError(f"{p}: corrupt video (no decodable frame)")


def _av_reason(exc: Any) -> str:
    """FFmpeg's own words, without PyAV's errno prefix and the repeated file name."""
    if getattr(exc, "errno", None) == 22:  # EINVAL: the demuxer is not on our allow-list
        return "not an allowed media format"
    return str(getattr(exc, "strerror", None) or _first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
