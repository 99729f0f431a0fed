"""A long video's ladder as segments, with the real ffmpeg: cut at keyframes, encoded per
segment, joined and checked against the source (stages/ladder_segments.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import stages  # noqa: F401  (registers the media stages)
from mediajobs import presets
from mediajobs.dashboard.snapshot import Snapshots
from mediajobs.progress_model import media_cost
from pipeline.broker import Broker
from pipeline.client import Client
from stages.ffmpeg_run import ffmpeg_exe
from stages.segments import forced_keyframes, joined_facts, keyframes, plan_cuts
from tests.helpers import run_dag

RUNGS = [{"name": "240p", "height": 240}, {"name": "120p", "height": 120}]


def make_clip(path: Path, seconds: float, gop: int, *, audio: bool = True, fps: int = 25) -> Path:
    """A 320x240 clip with a keyframe every ``gop`` frames (0: only the first)."""
    cmd = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
           f"testsrc2=size=320x240:rate={fps}"]  # fmt: skip
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    x264 = (
        "keyint=100000:min-keyint=100000:scenecut=0"
        if gop == 0
        else f"keyint={gop}:min-keyint={gop}:scenecut=0"
    )
    cmd += ["-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2",
            "-x264-params", x264, "-pix_fmt", "yuv420p"]  # fmt: skip
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    subprocess.run([*cmd, str(path)], check=True)
    return path


def _preset(**ladder: Any) -> dict[str, Any]:
    preset = presets.load("video")
    preset["video_ladder"].update(rungs=RUNGS, **ladder)
    return preset


def test_forced_keyframes_follow_the_source_wide_grid() -> None:
    assert forced_keyframes(0.0, 5.0) == "0,2,4"
    assert forced_keyframes(3.0, 5.0) == "0,1,3"  # 4 and 6 s in the source
    assert forced_keyframes(4.0, 2.0) == "0"


def test_cuts_are_the_keyframes_nearest_equal_boundaries(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", 8, 25)
    kf = keyframes(str(clip))
    assert kf.frames == 200 and kf.indices == (0, 25, 50, 75, 100, 125, 150, 175)
    assert abs(kf.duration - 8.0) < 0.05
    plan = plan_cuts(kf, 2.5)  # 8 s / 2.5 -> 3 segments: cuts near 2.67 and 5.33 s
    assert plan.cuts == (75, 125) and plan.wanted == 3 and plan.note == ""


def test_a_long_video_is_transcoded_as_segments_joined_and_verified(
    tmp_path: Path, media_client: Client, media_broker: Broker
) -> None:
    clip = make_clip(tmp_path / "talk.mp4", 7, 25)
    out = tmp_path / "talk"
    dag = presets.build_dag(str(clip), str(out), _preset(segment_above=3, segment_seconds=2))
    media_client.submit(dag)
    assert run_dag(media_client, media_broker, dag.id, timeout=180) == "completed"

    names = set(media_client.jobs(dag.id))
    assert {"ladder_seg_0000", "ladder_seg_0001", "ladder_seg_0002", "ladder_audio",
            "ladder_join"} <= names  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    videos = {o["rung"]: o for o in manifest["outputs"] if o.get("rung")}
    assert set(videos) == {"240p", "120p"}
    for rung, o in videos.items():
        facts = joined_facts(out / Path(o["path"]).name)
        assert facts.frames == 175, rung
        assert abs(facts.duration - 7.0) <= 0.04 + 1e-3
        assert facts.audio_start is not None and abs(facts.audio_start - facts.video_start) < 0.02
    assert (out / "talk_hls" / "master.m3u8").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # segments removed

    # The dashboard's DAG graph draws the segments, each waited for by the join.
    graph = Snapshots(media_client).dag(dag.id)
    assert graph is not None
    drawn = {j["name"]: j for j in graph["jobs"]}
    assert set(drawn["ladder_join"]["deps"]) >= {dag.job_id(f"ladder_seg_000{i}") for i in range(4)}

    # The progress display weighs the segments as the one-job ladder's encode, split up.
    jobs = media_client.jobs(dag.id)
    facts = jobs["probe"]["result"]
    whole = media_cost("video_ladder", jobs["video_ladder"]["params"], facts)
    parts = [media_cost(j["stage"], j["params"], facts) for n, j in jobs.items() if "_seg_" in n]
    assert whole and len(parts) == 4 and abs(sum(p or 0 for p in parts) / whole - 1) < 0.02
    after = media_cost("video_ladder", jobs["video_ladder"]["params"], facts, fanned_out=True)
    assert after is not None and after < whole / 50


def test_a_source_with_one_keyframe_becomes_one_segment_with_a_note(
    tmp_path: Path, media_client: Client, media_broker: Broker
) -> None:
    clip = make_clip(tmp_path / "onekey.mp4", 5, 0, audio=False)
    out = tmp_path / "onekey"
    dag = presets.build_dag(str(clip), str(out), _preset(segment_above=2, segment_seconds=2))
    media_client.submit(dag)
    assert run_dag(media_client, media_broker, dag.id, timeout=120) == "completed"
    ladder = (media_client.job(dag.job_id("video_ladder")) or {})["result"]
    assert ladder["segmented"]["segments"] == 1 and ladder["segmented"]["wanted"] == 2
    assert "1 segment(s) instead of 2: the source has 1 keyframe(s)" in ladder["segmented"]["note"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert "instead of 2" in manifest["stages"]["ladder_join"]["note"]
    for o in manifest["outputs"]:
        if o.get("rung"):
            assert joined_facts(out / Path(o["path"]).name).frames == 125
