"""JSON text for Redis, with one encoder and one decoder per form.

``json.dumps``/``json.loads`` build an encoder and sniff the text's encoding on every
call; on the per-job paths (a claim, a completion, a submit) that was a fifth of the
client's Python work. The functions here behave as the calls they replace.

The encoders call the C encoder that ``JSONEncoder.encode`` ends in, without the ~85
Python opcodes of ``encode`` and ``iterencode`` around it (a submit encodes three times).
One encoder serves every call: it is made without a circular-reference table (making
one per call, with a fresh table, was a third of the cost of encoding a small dict), so
a circular value is found by the recursion limit instead, and refused as
``json.dumps`` refuses it. Without a table, a failed encode leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

_DECODER = json.JSONDecoder()
_DECODE = _DECODER.decode
# The C scanner ``decode`` ends in: ``decode`` adds ~50 Python opcodes and two regex
# matches around it (whitespace before and after), a tenth of a worker's per-job Python.
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _encoder(allow_nan: bool) -> Callable[[Any], str]:
    if c_make_encoder is None:  # a Python built without _json
        return json.JSONEncoder(separators=(",", ":"), allow_nan=allow_nan).encode
    # markers=None: no table of the containers being encoded, so no state between calls
    # (the encoder is shared by threads too).
    chunks = c_make_encoder(
        None, _not_json, encode_basestring_ascii, None, ":", ",", False, False, allow_nan
    )

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return encode_basestring_ascii(value)
        try:
            return "".join(chunks(value, 0))
        except RecursionError:
            raise ValueError(
                "Circular reference detected (or a value nested deeper than the recursion limit)"
            ) from None

    return encode


_STRICT = _encoder(allow_nan=False)
_COMPACT = _encoder(allow_nan=True)


def dumps_strict(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"), allow_nan=False)``: NaN and infinities
    raise ValueError, as do circular structures; other non-JSON values TypeError."""
    return "null" if value is None else _STRICT(value)


def dumps_compact(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))``."""
    return _COMPACT(value)


def loads_reply(raw: bytes | str) -> Any:
    """JSON text from a Redis reply (bytes, UTF-8) as its value, as ``json.loads``
    gives it (and raises): text with whitespace around the value, or none at all, takes
    ``decode``'s way; the compact text the encoders here write, the scanner's alone."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return _DECODE(text)
    if end != len(text):
        return _DECODE(text)
    return value
