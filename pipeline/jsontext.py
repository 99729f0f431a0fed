"""JSON text for Redis, with one encoder and one decoder per form.

``json.dumps``/``json.loads`` build an encoder and sniff the text's encoding on every
call; on the per-job paths (a claim, a completion, a submit) that was a fifth of the
client's Python work. The functions here behave as the calls they replace.
"""

from __future__ import annotations

import json
from typing import Any

_STRICT = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode
_DECODE = json.JSONDecoder().decode


def dumps_strict(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"), allow_nan=False)``: NaN and infinities
    raise ValueError, as do circular structures; other non-JSON values TypeError."""
    return "null" if value is None else _STRICT(value)


def dumps_compact(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))``."""
    return _COMPACT(value)


def loads_reply(raw: bytes | str) -> Any:
    """JSON text from a Redis reply (bytes, UTF-8) as its value."""
    return _DECODE(raw.decode() if isinstance(raw, bytes) else raw)
