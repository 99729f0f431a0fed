"""Redis replies as text: the client returns bytes, the rest of mediapipe speaks str."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def as_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def as_str_dict(h: Mapping[Any, Any]) -> dict[str, str]:
    return {as_str(k): as_str(v) for k, v in h.items()}
