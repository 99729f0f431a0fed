"""A segment of a long video's ladder killed with SIGKILL mid-encode runs again alone, on
another worker, and the joined renditions still hold every frame of the source."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import stages  # noqa: F401  (registers the media stages)
from mediajobs import presets
from pipeline.client import Client
from stages.segments import joined_facts
from tests.stages.test_ladder_segments import make_clip
from tests.workers.conftest import Workers, wait_for


def test_a_segment_killed_mid_encode_retries_alone(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "long.mp4", 8, 25, fps=25)
    # 8 s in two segments; 640x480 keeps each segment's encode long enough to land in.
    big = tmp_path / "big.mp4"
    import subprocess

    from stages.ffmpeg_run import ffmpeg_exe

    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), "-vf", "scale=1280:720",
         "-c:v", "libx264", "-preset", "ultrafast", "-x264-params",
         "keyint=25:min-keyint=25:scenecut=0", "-c:a", "copy", str(big)],
        check=True,
    )  # fmt: skip
    preset = {
        "name": "ladder-only",
        "kind": "video",
        "video_ladder": {
            "rungs": [{"name": "720p", "height": 720}, {"name": "360p", "height": 360}],
            "x264_preset": "medium",
            "segment_above": 3,
            "segment_seconds": 4,
        },
    }
    out = tmp_path / "out"
    dag = presets.build_dag(str(big), str(out), preset)
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
