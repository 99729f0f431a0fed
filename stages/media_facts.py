"""Facts about an output file, read back from the file itself (not from what we asked for)."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from stages.output import bytes_facts, file_facts


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
    # One read serves the hash and the size: for JPEG and WebP the size is in the first
    # bytes, and opening each output with libvips cost 0.6 ms of a rendition's ~50.
    data = Path(path).read_bytes()
    size = image_size(data)
    if size is None:
        import pyvips

        img = pyvips.Image.new_from_buffer(data, "")
        size = (img.width, img.height)
    return bytes_facts(
        path, data, kind="image", format=fmt, width=size[0], height=size[1], duration=None, **extra
    )


def encoded_image_facts(
    path: str | os.PathLike[str], data: bytes, fmt: str, width: int, height: int, **extra: Any
) -> dict[str, Any]:
    """``image_facts`` of a file just written from ``data``, an image of ``width`` x
    ``height`` encoded in memory: the same entry, without reading the file back."""
    return bytes_facts(
        path, data, kind="image", format=fmt, width=width, height=height, duration=None, **extra
    )


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height as stored in a JPEG's frame header or a WebP's first chunk, read
    without a decoder; None for other formats or anything unexpected (ask libvips then)."""
    try:
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
    except struct.error:
        pass
    return None


# Start-of-frame markers: every SOFn except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or scan data before any frame header
            return None
        if marker in _SOF:
            height, width = struct.unpack_from(">HH", data, i + 5)
            return (width, height) if width and height else None
        (length,) = struct.unpack_from(">H", data, i + 2)
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: key frame header
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14-bit sizes minus one
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended (alpha, animation, metadata): the canvas
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


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
