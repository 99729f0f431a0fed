"""`mediapipe submit` on one machine: the embedded server and a local pool, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pyvips

from stages.media_facts import video_facts
from tests.cli.conftest import FIXTURES, Cli


def test_submit_an_image_and_a_video_writes_outputs_and_json(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "renditions"
    res = cli.run(
        "submit",
        str(FIXTURES / "large.jpg"),
        str(FIXTURES / "clip.mp4"),
        "--out",
        str(out),
        "--json",
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    docs = json.loads(res.stdout)
    assert isinstance(docs, list) and len(docs) == 2
    image, video = docs
    for doc in docs:
        assert set(doc) == {"schema", "kind", "dag_id", "status", "input", "outputs", "manifest"}
        assert (doc["schema"], doc["kind"]) == (1, "submitted_input")
        assert Path(doc["manifest"]).is_file()
        assert doc["status"] == "completed" and doc["dag_id"]
        for o in doc["outputs"]:
            assert set(o) == {
                "path",
                "kind",
                "format",
                "width",
                "height",
                "duration",
                "bytes",
                "sha256",
            }
            assert Path(o["path"]).stat().st_size == o["bytes"]
    assert image["input"]["kind"] == "image" and video["input"]["kind"] == "video"
    for o in image["outputs"]:
        img = pyvips.Image.new_from_file(o["path"])
        assert (img.width, img.height) == (o["width"], o["height"])
    widths = sorted({o["width"] for o in image["outputs"]})
    assert widths == [256, 512, 1024, 2048]
    mp4s = [o for o in video["outputs"] if o["format"] == "mp4"]
    assert mp4s
    for o in mp4s:
        f = video_facts(o["path"])
        assert (f["width"], f["height"]) == (o["width"], o["height"]) == (320, 240)
        assert f["duration"] == pytest.approx(2.0, abs=0.04)
    assert (out / "large" / "manifest.json").exists() and (out / "clip" / "manifest.json").exists()


def test_summary_table_without_json(cli: Cli, tmp_path: Path) -> None:
    res = cli.run("submit", str(FIXTURES / "no_audio.mp4"), "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    assert "no_audio.mp4" in res.stdout and "completed" in res.stdout


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.mp4", "unsupported or corrupt media"),
        ("empty.mp4", "empty file"),
        ("not_an_image.jpg", "unsupported or corrupt media"),
        ("evil.m3u8", "not an allowed media format"),
        ("missing.mp4", "no such file"),
    ],
)
def test_a_bad_input_is_rejected_with_one_clear_line_and_exit_2(
    cli: Cli, tmp_path: Path, name: str, reason: str
) -> None:
    out = tmp_path / "o"
    res = cli.run("submit", str(FIXTURES / name), "--out", str(out), "--json")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert name in lines[0] and reason in lines[0]
    assert "Traceback" not in res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "failed" and reason in doc["error"]
    assert not out.exists() or not any(out.rglob("*.*"))


def test_a_directory_is_rejected(cli: Cli, tmp_path: Path) -> None:
    res = cli.run("submit", str(tmp_path), "--json")
    assert res.returncode == 2 and "is a directory" in res.stderr


def test_a_dag_that_fails_while_processing_exits_1(cli: Cli, tmp_path: Path) -> None:
    preset = tmp_path / "broken.toml"
    preset.write_text(
        # A valid preset (checked at submit) whose bitrate only ffmpeg refuses.
        'kind = "video"\n[video_ladder]\naudio_bitrate = "1"\n'
        'rungs = [{name = "240p", height = 240}]\n'
    )
    res = cli.run(
        "submit",
        str(FIXTURES / "clip.mp4"),
        "--preset",
        str(preset),
        "--out",
        str(tmp_path / "o"),
        "--json",
    )
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "failed" and "ffmpeg" in doc["error"]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "clip.mp4" in lines[0] and "Traceback" not in res.stderr
    assert not list((tmp_path / "o").rglob("*.part*"))


def test_paths_with_spaces_unicode_and_shell_characters(cli: Cli, tmp_path: Path) -> None:
    odd = tmp_path / "in put; $(rm -rf x) 'ü' ♫.mp4"
    odd.write_bytes((FIXTURES / "no_audio.mp4").read_bytes())
    res = cli.run("submit", str(odd), "--out", str(tmp_path / "out dir"), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "completed"
    assert all(Path(o["path"]).exists() for o in doc["outputs"])
