"""Presets build the media DAG; run end to end, the manifest lists every output truthfully."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import stages  # noqa: F401  (registers the media stages)
from mediajobs import presets
from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import SubmissionError
from stages.output import sha256_of
from tests.helpers import run_dag


def test_video_preset_builds_the_expected_dag() -> None:
    dag = presets.build_dag("/in/v.mp4", "/out/v", presets.load("video"))
    children = {n: set(node.children) for n, node in dag.nodes.items()}
    assert children["probe"] == set()
    assert children["video_ladder"] == {"probe"}
    assert children["hls_package"] == {"video_ladder"}
    assert children["manifest"] == {
        "probe",
        "video_ladder",
        "hls_package",
        "video_poster",
        "video_sprite",
        "audio_extract",
    }
    policies = {c: str(p) for c, p in dag.nodes["manifest"].children.items()}
    assert policies["video_ladder"] == "fail" and policies["video_sprite"] == "continue"


def test_auto_preset_follows_the_kind_and_custom_presets_are_data(tmp_path: Path) -> None:
    assert presets.load("auto", "image")["name"] == "image"
    assert presets.load("auto", "video")["kind"] == "video"
    custom = tmp_path / "small.toml"
    custom.write_text('kind = "video"\n[video_ladder]\nrungs = [{name = "240p", height = 240}]\n')
    dag = presets.build_dag("/in/v.mp4", "/out", presets.load(str(custom)))
    assert set(dag.nodes) == {"probe", "video_ladder", "manifest"}
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "video"\n[video_laddr]\n')
    with pytest.raises(SubmissionError, match="unknown table"):
        presets.load(str(bad))
    with pytest.raises(SubmissionError, match="not a built-in preset"):
        presets.load("nope")
    with pytest.raises(SubmissionError, match="no preset for media of kind 'audio'"):
        presets.load("auto", "audio")


def test_video_dag_end_to_end_writes_a_truthful_manifest(
    media: Path, tmp_path: Path, media_client: Client, media_broker: Broker
) -> None:
    preset = presets.load("video")
    preset["video_ladder"]["rungs"] = [
        {"name": "240p", "height": 240},
        {"name": "120p", "height": 120},
    ]
    out = tmp_path / "clip"
    dag = presets.build_dag(str(media / "clip.mp4"), str(out), preset)
    media_client.submit(dag)
    assert run_dag(media_client, media_broker, dag.id, timeout=120) == "completed"

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["sha256"] == sha256_of(media / "clip.mp4")
    assert manifest["input"]["kind"] == "video"
    kinds = sorted((o["stage"], o["kind"]) for o in manifest["outputs"])
    assert kinds == [
        ("audio_extract", "audio"),
        ("hls_package", "hls"),
        ("video_ladder", "video"),
        ("video_ladder", "video"),
        ("video_poster", "image"),
        ("video_sprite", "image"),
    ]
    for o in manifest["outputs"]:
        path = Path(o["path"])
        assert path.is_file(), o
        assert o["bytes"] == path.stat().st_size and o["sha256"] == sha256_of(path)
    sizes = {o["rung"]: (o["width"], o["height"]) for o in manifest["outputs"] if "rung" in o}
    assert sizes == {"240p": (320, 240), "120p": (160, 120)}
    assert set(manifest["stages"]) == {
        "probe",
        "video_ladder",
        "hls_package",
        "video_poster",
        "video_sprite",
        "audio_extract",
    }
    for info in manifest["stages"].values():
        assert info["state"] == "completed" and info["attempt"] == 1 and info["seconds"] >= 0
    assert not [p for p in out.rglob("*") if ".part" in p.name]


def test_a_corrupt_video_fails_the_dag_at_the_probe_and_writes_nothing(
    media: Path, tmp_path: Path, media_client: Client, media_broker: Broker
) -> None:
    out = tmp_path / "bad"
    dag = presets.build_dag(str(media / "truncated.mp4"), str(out), presets.load("video"))
    media_client.submit(dag)
    assert run_dag(media_client, media_broker, dag.id, timeout=60) == "failed"
    dead = media_client.dead()
    assert [d["name"] for d in dead] == ["probe"]
    assert dead[0]["attempts"] == 1 and dead[0]["error"]["type"] == "BadInputError"
    assert "truncated.mp4" in dead[0]["error"]["message"]
    assert not out.exists()
