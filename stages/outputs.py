"""Where a stage's result holds its outputs: the result keys its declaration names.

A stage returns its files as entries (dicts with at least ``path``) under the keys it
declares in ``outputs=`` (``renditions``, ``poster``...), one entry or a list of them. The
manifest lists, and storage uploads, exactly what ``iter_outputs`` finds, so a new stage's
outputs are listed and published without either knowing the stage.

The manifest reads results by job name, not by stage, so it walks every key any declared
stage names; this module keeps that set, filled as stages are declared.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

# Keys the stage contract itself puts in every result: never an output.
RESERVED = frozenset({"stage_info"})

# Every output key declared so far, in declaration order (a dict as an ordered set).
_declared: dict[str, None] = {}


def declare_output_keys(keys: Iterable[str]) -> None:
    for key in keys:
        if key in RESERVED:
            raise ValueError(f"{key!r} is not an output key: the stage contract sets it")
        _declared.setdefault(key)


def output_keys() -> tuple[str, ...]:
    """Every result key that some declared stage returns its outputs under."""
    return tuple(_declared)


def iter_outputs(result: Any, keys: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Each output entry of ``result``, under ``keys`` (default: every declared output
    key). The entries are the result's own dicts: storage replaces their paths in place."""
    if not isinstance(result, dict):
        return
    for key in output_keys() if keys is None else keys:
        value = result.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "path" in item:
                yield item
