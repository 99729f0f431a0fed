"""The keys at the top of a preset, beside ``name`` and ``kind``.

Each stage's own table is checked against what the stage declares it accepts (its params
dataclass, ``stages.contract``); this module holds only the few keys that apply to every
stage a preset runs. A preset is data from a file anyone may hand to ``--preset`` (or to a
schedule), so a bad value is one SubmissionError naming the preset file and the key
(exit 2), before anything is queued.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import SubmissionError
from stages.params import Rule, boolean

# Keys at the top of a preset that apply to every stage it runs which declares the key.
PRESET_KEYS: dict[str, Rule] = {
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
