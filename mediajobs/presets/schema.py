"""What each stage accepts from a preset: one table of keys per stage, each key a check.

A preset is data from a file anyone may hand to ``--preset`` (or to a schedule), so it is
checked whole before anything is queued: an unknown key, a wrong type or a value out of
range is one SubmissionError naming the preset file, the table and the key (exit 2). The
keys that decide where outputs go (``ROUTING_KEYS``) are set by ``submit`` alone: a
preset that names one is rejected, however harmless its value. Rung and format names
end up in file names, so they are held to ``LABEL``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.errors import SubmissionError

# Where a stage reads and writes, and which store it publishes to: never from a preset.
ROUTING_KEYS = frozenset({"input", "out_dir", "name", "storage", "service", "endpoint"})
LABEL = re.compile(r"[A-Za-z0-9_-]{1,32}")
BITRATE = re.compile(r"[0-9]+(\.[0-9]+)?[kKmM]?")
IMAGE_FORMATS = ("webp", "avif", "jpeg", "jpg")
KEEP = ("none", "exif", "xmp", "iptc", "icc", "other", "all")
FAIL_ON = ("none", "truncated", "error", "warning")
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast",
    "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip
EFFORT = {"webp": (0, 6), "avif": (0, 9)}  # libvips' ranges; jpegsave has no effort
MAX_DIMENSION = 16384

# A check raises ValueError with what it expected; ``validate`` adds where.
Check = Callable[[Any], None]


def integer(lo: int, hi: int) -> Check:
    def check(v: Any) -> None:
        # bool is an int to Python, never to a preset author.
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"an integer in {lo}..{hi}")

    return check


def number(lo: float, hi: float) -> Check:
    def check(v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ValueError(f"a number in {lo}..{hi}")

    return check


def boolean(v: Any) -> None:
    if not isinstance(v, bool):
        raise ValueError("true or false")


def one_of(*choices: str) -> Check:
    def check(v: Any) -> None:
        if v not in choices:
            raise ValueError(f"one of {', '.join(choices)}")

    return check


def matching(pattern: re.Pattern[str], what: str) -> Check:
    def check(v: Any) -> None:
        if not isinstance(v, str) or not pattern.fullmatch(v):
            raise ValueError(what)

    return check


def list_of(item: Check, *, min_len: int = 1, max_len: int = 16) -> Check:
    def check(v: Any) -> None:
        what = f"a list of {min_len} to {max_len} items"
        if not isinstance(v, list) or not min_len <= len(v) <= max_len:
            raise ValueError(what)
        for x in v:
            try:
                item(x)
            except ValueError as exc:
                raise ValueError(f"{what}, each {exc}") from None

    return check


def table_of(checks: Mapping[str, Check]) -> Check:
    """A table whose keys are among ``checks`` (a table of formats, a rung)."""

    def check(v: Any) -> None:
        if not isinstance(v, dict):
            raise ValueError(f"a table with keys among {', '.join(checks)}")
        for key, value in v.items():
            if key not in checks:
                raise ValueError(f"a table with keys among {', '.join(checks)} (not {key!r})")
            try:
                checks[key](value)
            except ValueError as exc:
                raise ValueError(f"{key} {exc}") from None

    return check


def keep_names(v: Any) -> None:
    names = v.split(",") if isinstance(v, str) else v
    if not isinstance(names, list) or any(str(n).strip().lower() not in KEEP for n in names):
        raise ValueError(f"names among {', '.join(KEEP)} (a list or a comma-separated string)")


def rung(v: Any) -> None:
    table_of(RUNG)(v)
    if not isinstance(v.get("name"), str) or not isinstance(v.get("height"), int):
        raise ValueError("a table with at least name and height")


def distinct_rungs(v: Any) -> None:
    list_of(rung)(v)
    names = [r["name"] for r in v]
    if len(set(names)) != len(names):
        raise ValueError("rungs with distinct names (each names an output file)")


LABEL_CHECK = matching(LABEL, "1 to 32 characters among A-Z a-z 0-9 _ -")
BITRATE_CHECK = matching(BITRATE, "a bitrate such as 128k or 1.5M")
RUNG: dict[str, Check] = {
    "name": LABEL_CHECK,
    "height": integer(2, MAX_DIMENSION),
    "crf": integer(0, 51),
    "maxrate": BITRATE_CHECK,
    "bufsize": BITRATE_CHECK,
}
# The stage looks qualities up by the canonical name: a "jpg" key would be ignored.
FORMAT_QUALITY = table_of(dict.fromkeys(("webp", "avif", "jpeg"), integer(1, 100)))

# stage -> key -> check: everything a preset may say to that stage.
STAGE_KEYS: dict[str, dict[str, Check]] = {
    "image_renditions": {
        "widths": list_of(integer(1, MAX_DIMENSION)),
        "formats": list_of(one_of(*IMAGE_FORMATS), max_len=len(IMAGE_FORMATS)),
        "quality": FORMAT_QUALITY,
        "effort": table_of({f: integer(*r) for f, r in EFFORT.items()}),
        "animated": boolean,
        "keep": keep_names,
        "max_pixels": integer(1, 1 << 40),
        "fail_on": one_of(*FAIL_ON),
    },
    "video_ladder": {
        "rungs": distinct_rungs,
        "x264_preset": one_of(*X264_PRESETS),
        "audio_bitrate": BITRATE_CHECK,
        "threads": integer(0, 64),
        "gpu": one_of("auto", "off", "decode", "nvenc"),
    },
    "hls_package": {"segment_seconds": number(1, 60)},
    "video_poster": {"width": integer(16, MAX_DIMENSION)},
    "video_sprite": {
        "every": number(0.5, 3600),
        "width": integer(16, 1024),
        "columns": integer(1, 100),
    },
    "audio_extract": {"codec": one_of("aac", "opus"), "bitrate": BITRATE_CHECK},
}


# Keys at the top of a preset, beside name and kind, that apply to every stage it runs.
PRESET_KEYS: dict[str, Check] = {
    # Video outputs carry none of the source's tags (GPS location, title, creation time,
    # handler names, chapters) unless this is true; images say what to keep with
    # [image_renditions] keep.
    "keep_metadata": boolean,
}
# Video stages only: an image preset already has [image_renditions] keep.
VIDEO_ONLY_KEYS = frozenset({"keep_metadata"})


def validate_preset_key(source: str, kind: str, key: str, value: Any) -> None:
    """Check one top-level key of preset ``source``; SubmissionError naming it if bad."""
    if key in VIDEO_ONLY_KEYS and kind != "video":
        raise SubmissionError(
            f"preset {source}: {key} applies to video presets (images: [image_renditions] keep)"
        )
    try:
        PRESET_KEYS[key](value)
    except ValueError as exc:
        raise SubmissionError(f"preset {source}: {key} must be {exc}, not {value!r}") from None


def validate_stage(source: str, stage: str, params: Any) -> None:
    """Check one stage's table from preset ``source``; SubmissionError on the first fault."""
    where = f"preset {source}: [{stage}]"
    if not isinstance(params, dict):
        raise SubmissionError(f"{where} must be a table")
    accepted = STAGE_KEYS[stage]
    for key, value in params.items():
        if key in ROUTING_KEYS:
            raise SubmissionError(
                f"{where}: key {key!r} is not allowed in a preset (where outputs go is set by"
                " submit)"
            )
        if key not in accepted:
            raise SubmissionError(f"{where}: unknown key {key!r} (accepted: {', '.join(accepted)})")
        try:
            accepted[key](value)
        except ValueError as exc:
            raise SubmissionError(f"{where}: {key} must be {exc}, not {value!r}") from None
