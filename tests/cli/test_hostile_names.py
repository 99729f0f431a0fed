"""`mediapipe submit` with names and presets from someone else: outputs stay under --out."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import FIXTURES, Cli

# One small width in one format: the test is about where files go, not about pixels.
TINY = 'kind = "image"\n[image_renditions]\nwidths = [32]\nformats = ["jpeg"]\n'


def _files(tmp_path: Path) -> set[Path]:
    """Every file under ``tmp_path`` but the embedded server's (in ``home``)."""
    home = tmp_path / "home"
    return {p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(home)}


def test_hostile_input_names_each_get_their_own_folder_under_out(cli: Cli, tmp_path: Path) -> None:
    drop, out = tmp_path / "drop", tmp_path / "site" / "out"
    drop.mkdir()
    names = [
        "...png",  # stem ".."
        "..png",  # stem "."
        ".hidden.png",
        "a;rm -rf ~ $(id).png",
        "Photo.png",
        "photo.png",
        "é" * 120 + ".png",  # 244 bytes
    ]
    for n in names:
        (drop / n).write_bytes((FIXTURES / "palette_alpha.png").read_bytes())
    preset = tmp_path / "tiny.toml"
    preset.write_text(TINY)
    before = _files(tmp_path)
    res = cli.run(
        "submit",
        *(str(drop / n) for n in names),
        *("--preset", str(preset), "--out", str(out), "--json"),
    )
    assert res.returncode == 0, res.stderr
    docs = json.loads(res.stdout)
    assert [d["status"] for d in docs] == ["completed"] * len(names)
    written = _files(tmp_path) - before
    assert written and all(p.is_relative_to(out) for p in written), sorted(written)
    folders = [Path(d["outputs"][0]["path"]).parent for d in docs]
    assert all(f.parent == out for f in folders)
    assert len({f.name.casefold() for f in folders}) == len(names)
    assert {p.parent for p in written if p.name == "manifest.json"} == set(folders)


def test_a_preset_cannot_choose_where_outputs_go(cli: Cli, tmp_path: Path) -> None:
    preset = tmp_path / "sneaky.toml"
    preset.write_text(TINY + 'name = "../../../escaped"\n')
    out = tmp_path / "a" / "b" / "out"
    res = cli.run(
        "submit",
        str(FIXTURES / "palette_alpha.png"),
        *("--preset", str(preset), "--out", str(out)),
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert str(preset) in lines[0] and "'name'" in lines[0] and "not allowed" in lines[0]
    assert _files(tmp_path) == {preset}


def test_a_misspelt_preset_key_exits_2_naming_the_key_and_the_file(
    cli: Cli, tmp_path: Path
) -> None:
    preset = tmp_path / "typo.toml"
    preset.write_text('kind = "image"\n[image_renditions]\nwidht = [32]\n')
    res = cli.run(
        "submit",
        str(FIXTURES / "palette_alpha.png"),
        *("--preset", str(preset), "--out", str(tmp_path / "out"), "--json"),
    )
    assert res.returncode == 2, res.stderr
    assert str(preset) in res.stderr and "unknown key 'widht'" in res.stderr
    assert not (tmp_path / "out").exists()
