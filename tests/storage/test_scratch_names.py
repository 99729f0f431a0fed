"""A stage bound for storage writes inside its scratch folder whatever its job's name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stages.output import atomic_output, file_facts, output_path
from stages.storage import stores_outputs


@stores_outputs
def _writes_one_file(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    final = output_path(params["out_dir"], "poster.jpg")
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(final) as tmp:
        tmp.write_bytes(b"\xff\xd8 not really a jpeg")
    return {"poster": file_facts(final)}


def test_a_hostile_name_stays_inside_the_scratch_folder_and_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIAPIPE_SCRATCH", str(tmp_path / "scratch"))
    store = tmp_path / "store"
    params = {"name": "../../escaped", "storage": f"file://{store}"}
    result = _writes_one_file(None, params, {})
    assert result["poster"]["path"] == str(store / "escaped" / "poster.jpg")
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg"))
    assert written == ["store/escaped/poster.jpg"]  # nothing beside the scratch folder
