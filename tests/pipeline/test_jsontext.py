"""pipeline/jsontext.py writes what json.dumps writes, and fails where it fails."""

from __future__ import annotations

import gc
import json
import math
import tracemalloc
from typing import Any

import pytest

from pipeline.jsontext import dumps_compact, dumps_strict, loads_reply

VALUES: list[Any] = [
    None,
    True,
    0,
    -7,
    10**30,
    1.5,
    -0.0,
    1e300,
    0.1,
    "",
    'é "quoted" \\ \n \u2028 \U0001f600',
    [],
    {},
    [1, [2, [3, None]]],
    {"z": 1, "a": [True, {"n": 2.5}], "é": "x"},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
    (1, 2),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_the_same_text_as_json_dumps(value: Any) -> None:
    assert dumps_strict(value) == json.dumps(value, separators=(",", ":"), allow_nan=False)
    assert dumps_compact(value) == json.dumps(value, separators=(",", ":"))
    assert loads_reply(dumps_strict(value).encode()) == json.loads(json.dumps(value))


def test_strict_refuses_what_json_dumps_refuses_and_compact_writes_nan() -> None:
    for bad in (math.nan, math.inf, {"a": [-math.inf]}):
        with pytest.raises(ValueError, match="Out of range float"):
            dumps_strict(bad)
    assert dumps_compact([math.nan, math.inf]) == "[NaN,Infinity]"
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        dumps_strict({"a": object()})
    with pytest.raises(TypeError, match="keys must be"):
        dumps_strict({1j: 1})


def test_a_failed_encode_leaves_nothing_behind() -> None:
    """The C encoder's table of the containers being encoded is made per call: an encode
    that fails leaves its containers in the table, so a shared one would keep every
    failed value alive (a worker whose results keep failing to encode would grow)."""
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference detected"):
        dumps_strict(loop)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(5000):
            with pytest.raises(TypeError):
                dumps_strict({"payload": "x" * 200, "n": i, "bad": object()})
        gc.collect()
        grown = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 200_000, f"{grown} bytes kept by 5,000 failed encodes"
    assert dumps_strict({"again": [1, 2]}) == '{"again":[1,2]}'


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1}',
        ' {"a": 1} ',
        "\n[1,2]\t",
        "7",
        '"s"',
        "null",
        "",
        " ",
        '{"a":1} x',
        '{"a":1}{"b":2}',
        "[1,",
        "nul",
        "NaN",
        "\ufeff1",
    ],
)
def test_a_reply_reads_as_json_loads_reads_it(text: str) -> None:
    try:
        expected: Any = ("ok", json.loads(text))
    except ValueError as exc:
        expected = ("error", type(exc))
    for raw in (text, text.encode()):
        try:
            got: Any = ("ok", loads_reply(raw))
        except ValueError as exc:
            got = ("error", type(exc))
        if expected[0] == "ok" and expected[1] != expected[1]:  # NaN
            assert got[0] == "ok" and got[1] != got[1]
        else:
            assert got == expected, (text, raw)
