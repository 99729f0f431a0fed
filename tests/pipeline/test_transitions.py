"""The transitions are the Lua files of pipeline/scripts/: adding one is adding its file."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from typing import Any

import redis

from pipeline.scripts import TRANSITIONS, Scripts, library


def test_every_lua_file_of_the_folder_is_a_transition_in_a_stable_order() -> None:
    files = [f.name for f in resources.files("pipeline.scripts").iterdir()]
    assert tuple(sorted(n[:-4] for n in files if n.endswith(".lua"))) == TRANSITIONS
    assert "claim" in TRANSITIONS and "includes" not in TRANSITIONS


def test_the_library_name_is_the_same_in_every_process() -> None:
    # Another interpreter lists the folder afresh: the digest must not depend on it.
    code = "from pipeline.scripts import library; print(library()[1])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == library()[1]


def test_every_transition_is_registered_as_a_function(r: redis.Redis) -> None:
    Scripts(r)
    _, prefix = library()
    libs: Any = r.function_list(library=f"mediapipe_{prefix.split('_')[1]}")
    names = {_fields(f)[b"name"].decode() for lib in libs for f in _fields(lib)[b"functions"]}
    assert names == {prefix + t for t in TRANSITIONS}


def _fields(reply: Any) -> dict[bytes, Any]:
    """A RESP2 map (a flat list of names and values) as a dict."""
    return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))
