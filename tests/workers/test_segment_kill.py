"""A segment of a long video's ladder killed with SIGKILL mid-encode runs again alone, on
another worker, and the joined renditions still hold every frame of the source."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import stages  # noqa: F401  (registers the media stages)
from mediajobs import presets
from pipeline.client import Client
from stages.ffmpeg_run import ffmpeg_exe
from stages.segments import joined_facts
from tests.stages.test_ladder_segments import make_clip
from tests.workers.conftest import Workers, wait_for


def _clip_720p(tmp_path: Path) -> Path:
    """8 s of 1280x720 with a keyframe every second: each segment's encode lasts long
    enough to land a kill or a cancel in."""
    clip = make_clip(tmp_path / "long.mp4", 8, 25, fps=25)
    big = tmp_path / "big.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), "-vf", "scale=1280:720",
         "-c:v", "libx264", "-preset", "ultrafast", "-x264-params",
         "keyint=25:min-keyint=25:scenecut=0", "-c:a", "copy", str(big)],
        check=True,
    )  # fmt: skip
    return big


def _ladder_preset(segment_seconds: float) -> dict[str, Any]:
    return {
        "name": "ladder-only",
        "kind": "video",
        "video_ladder": {
            "rungs": [{"name": "720p", "height": 720}, {"name": "360p", "height": 360}],
            "x264_preset": "medium",
            "segment_above": 3,
            "segment_seconds": segment_seconds,
        },
    }


def test_a_segment_killed_mid_encode_retries_alone(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    big = _clip_720p(tmp_path)
    out = tmp_path / "out"
    dag = presets.build_dag(str(big), str(out), _ladder_preset(segment_seconds=4))
    first = workers.spawn("--concurrency", "1", "--lease", "1.5")
    stage_client.submit(dag)
    seg0 = dag.job_id("ladder_seg_0000")

    def encoding() -> bool:
        job = stage_client.job(seg0) or {}
        folders = list(out.glob(".*-segments.part"))
        return job.get("state") == "active" and any(folders[0].glob(".seg_0000_*.part*"))

    wait_for(encoding, 60, "the first segment to be encoding")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    workers.spawn("--concurrency", "1", "--lease", "1.5")
    wait_for(lambda: stage_client.dag_state(dag.id) == "completed", 120, "the DAG to complete")

    jobs = stage_client.jobs(dag.id)
    attempts = {name: int(j["attempts"]) for name, j in jobs.items()}
    assert attempts["ladder_seg_0000"] == 2  # killed once, run again
    assert attempts["ladder_seg_0001"] == 1 and attempts["video_ladder"] == 1
    assert attempts["ladder_join"] == 1
    for rung in ("720p", "360p"):
        facts = joined_facts(out / f"big_{rung}.mp4")
        assert facts.frames == 200 and abs(facts.duration - 8.0) <= 0.041
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_cancel_stops_every_segment_and_nothing_of_the_dag_runs_after_it(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    big = _clip_720p(tmp_path)
    out = tmp_path / "out"
    dag = presets.build_dag(str(big), str(out), _ladder_preset(segment_seconds=2))
    workers.spawn("--concurrency", "2", "--lease", "1.5")
    stage_client.submit(dag)

    def segment_states() -> dict[str, str]:
        jobs = stage_client.jobs(dag.id)
        return {n: j["state"] for n, j in jobs.items() if n.startswith("ladder_seg_")}

    def one_running_others_waiting() -> bool:
        states = list(segment_states().values())
        return "active" in states and states.count("waiting") >= 2

    wait_for(one_running_others_waiting, 60, "a segment running and others waiting")
    secs, micros = stage_client.redis.time()
    cancelled_ms = secs * 1000 + micros // 1000
    stage_client.cancel(dag.id)
    wait_for(lambda: "active" not in segment_states().values(), 30, "the running one to stop")
    jobs = stage_client.jobs(dag.id)
    states = segment_states()
    assert len(states) == 4 and list(states.values()).count("cancelled") >= 3, states
    assert jobs["ladder_join"]["state"] == "cancelled"
    assert stage_client.dag_state(dag.id) == "cancelled"
    started = [int(j["started"]) for j in jobs.values() if j.get("started")]
    assert max(started) < cancelled_ms  # nothing of the DAG started after the cancel
    # The segment that was encoding was told to stop: no rendition, no temporary file of
    # its attempt left beside the segments.
    assert not list(out.glob("big_*.mp4"))
    wait_for(lambda: not list(out.glob(".*-segments.part/.seg_*")), 10, "temporaries removed")
