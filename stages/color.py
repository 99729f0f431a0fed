"""Colour for the 8-bit SDR outputs: HDR and wide-gamut video brought to BT.709.

Phones record HDR (iPhone: HLG, 10-bit, BT.2020) and some cameras PQ (HDR10). Squeezed
into 8-bit yuv420p without conversion, such video plays washed out: BT.2020 colours read
as BT.709 lose their saturation, and PQ's reference white (58 % of the signal) shows as
grey. So the ladder, the poster and the sprite convert through linear light with zscale
(libzimg) and tone-map the highlights:

    zscale to linear (1.0 = 203 nits, BT.2408's reference white, which becomes SDR white)
    -> BT.709 primaries -> tonemap mobius (linear below 0.3, highlights rolled off up to
    the 1,000-nit peak of BT.2100's HLG reference display) -> BT.709 transfer and matrix

Measured on synthetic PQ and HLG patches (tests/stages/test_video_conformance.py): an 18 %
grey comes out at 125 of 255 (BT.1886 says 125), reference white at 217, a BT.709 red
at (184, 48, 47) for (191, 50, 50); hable instead darkens grey to 92 and white to 172.
Without zscale (an ``$MEDIAPIPE_FFMPEG`` built without libzimg), HLG, which is made to
look right on SDR screens, only changes gamut with the ``colorspace`` filter (grey 111,
white 191); PQ cannot be converted without it and fails with the reason.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.errors import PermanentError
from stages.ffmpeg_run import ffmpeg_exe, has_filter
from stages.limits import SAFE_DEMUXERS, SAFE_PROTOCOLS

# FFmpeg's enum values (libavutil/pixfmt.h) as PyAV reports them, with their filter names.
TRC = {
    1: "bt709",
    6: "smpte170m",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    18: "arib-std-b67",
}
PRIMARIES = {1: "bt709", 5: "bt470bg", 6: "smpte170m", 9: "bt2020"}
MATRIX = {1: "bt709", 5: "bt470bg", 6: "smpte170m", 9: "bt2020nc", 10: "bt2020c"}
HDR_TRC = ("smpte2084", "arib-std-b67")
REFERENCE_WHITE_NITS = 203.0
PEAK_NITS = 1000.0
# What every converted output is tagged with, so players do not guess.
BT709_TAGS = {
    "colorspace": "bt709",
    "color_primaries": "bt709",
    "color_trc": "bt709",
    "color_range": "tv",
}


def video_color(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The first video stream's colour description: ``trc``, ``primaries`` and ``matrix``
    as filter names (None when untagged or unusual), ``full_range`` and ``bits``. Empty
    when the file cannot be read: ffmpeg, run next, fails on it with its own reason."""
    import av

    try:
        c = av.open(
            str(path),
            options={"format_whitelist": SAFE_DEMUXERS, "protocol_whitelist": SAFE_PROTOCOLS},
        )
    except av.FFmpegError:
        return {}
    with c:
        if not c.streams.video:
            return {}
        cc = c.streams.video[0].codec_context
        fmt = cc.format
        bits = max((comp.bits for comp in fmt.components), default=8) if fmt else 8
        return {
            "trc": TRC.get(cc.color_trc),
            "primaries": PRIMARIES.get(cc.color_primaries),
            "matrix": MATRIX.get(cc.colorspace),
            "full_range": cc.color_range == 2,
            "bits": bits,
        }


def needs_conversion(color: dict[str, Any]) -> bool:
    """HDR, or BT.2020 primaries: what would play washed out as plain BT.709."""
    return color.get("trc") in HDR_TRC or color.get("primaries") == "bt2020"


def to_sdr(video: Any, color: dict[str, Any], *, zimg: bool | None = None) -> Any:
    """``video`` (an ffmpeg-python stream) converted to BT.709 SDR, in 10-bit YUV: the
    ladder's ``format=yuv420p`` after scaling makes it 8-bit. Unchanged when the input
    needs no conversion (see ``needs_conversion``). ``zimg`` forces the path taken (for
    tests); by default it follows whether ffmpeg has the zscale filter."""
    if not needs_conversion(color):
        return video
    trc = color.get("trc") or "bt709"
    source = {
        "tin": trc,
        "pin": color.get("primaries") or "bt2020",
        "min": color.get("matrix") or "bt2020nc",
        "rin": "pc" if color.get("full_range") else "tv",
    }
    if zimg is None:
        zimg = has_filter("zscale")
    if zimg:
        linear = video.filter("zscale", t="linear", npl=REFERENCE_WHITE_NITS, **source)
        linear = linear.filter("format", "gbrpf32le").filter("zscale", p="bt709")
        if trc in HDR_TRC:
            peak = round(PEAK_NITS / REFERENCE_WHITE_NITS, 3)
            linear = linear.filter("tonemap", tonemap="mobius", desat=0, peak=peak)
        # Back to YUV inside zscale, with its BT.709 matrix, at 10 bits for the scalers
        # that follow: RGB left to a later scale filter would get swscale's own matrix.
        sdr = linear.filter("zscale", t="bt709", m="bt709", r="tv")
        return sdr.filter("format", "yuv420p10le")
    if trc == "smpte2084":
        raise PermanentError(
            f"PQ (HDR10) video needs ffmpeg's zscale filter (libzimg), which {ffmpeg_exe()} "
            "lacks; the bundled ffmpeg has it"
        )
    # HLG is built to look right on an SDR screen as it is: only the gamut changes.
    return video.filter(
        "colorspace",
        all="bt709",
        iall="bt2020",
        itrc="bt2020-10",
        irange=source["rin"],
        range="tv",
        format="yuv420p",
    )
