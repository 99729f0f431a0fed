"""Facts about an output file, read back from the file itself (not from what we asked for)."""

from __future__ import annotations

import os
from typing import Any

from stages.output import file_facts


def video_facts(path: str | os.PathLike[str], **extra: Any) -> dict[str, Any]:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        duration = float(c.duration) / 1_000_000 if c.duration else None
        facts: dict[str, Any] = {
            "kind": "video",
            "format": "mp4",
            "duration": duration,
            "width": v.codec_context.width if v else None,
            "height": v.codec_context.height if v else None,
            "video_codec": v.codec_context.name if v else None,
            "fps": float(v.average_rate) if v is not None and v.average_rate else None,
            "frames": v.frames if v is not None and v.frames else None,
            "audio_codec": a.codec_context.name if a else None,
        }
    return file_facts(path, **facts, **extra)


def image_facts(path: str | os.PathLike[str], fmt: str, **extra: Any) -> dict[str, Any]:
    import pyvips

    img = pyvips.Image.new_from_file(str(path))
    return file_facts(
        path, kind="image", format=fmt, width=img.width, height=img.height, duration=None, **extra
    )


def audio_facts(path: str | os.PathLike[str], fmt: str, **extra: Any) -> dict[str, Any]:
    import av

    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        duration = float(c.duration) / 1_000_000 if c.duration else None
        facts = {
            "kind": "audio",
            "format": fmt,
            "duration": duration,
            "width": None,
            "height": None,
            "audio_codec": a.codec_context.name,
            "channels": a.codec_context.channels,
            "sample_rate": a.codec_context.sample_rate,
        }
    return file_facts(path, **facts, **extra)
