"""Ctrl-C in a real ``mediapipe submit`` while a video transcodes: the command exits 130,
no temporary file stays in the output folder, no ffmpeg keeps running, and nothing of the
cancelled DAG is left to run (a later command must not transcode it)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import redis

from pipeline.client import Client
from pipeline.server import EmbeddedServer
from stages.ffmpeg_run import ffmpeg_exe
from tests.cli.conftest import Cli


def _video(path: Path, seconds: int = 8) -> Path:
    subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


def _ffmpeg_writing_to(folder: Path) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ffmpeg" in cmd and str(folder) in cmd:
            out.append(p.info["pid"])
    return out


def test_ctrl_c_mid_transcode_leaves_no_partial_file_no_ffmpeg_and_no_work(
    cli: Cli, tmp_path: Path
) -> None:
    video = _video(tmp_path / "talk.mp4")
    out = tmp_path / "out"
    proc = cli.popen("submit", str(video), "--out", str(out))
    deadline = time.monotonic() + 90
    parts: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        parts = [p for p in out.rglob(".*_720p.mp4.*part*") if p.stat().st_size > 100_000]
        if parts:
            break
        time.sleep(0.05)
    assert parts, "the transcode never got going"

    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert [p.name for p in out.rglob("*") if ".part" in p.name] == []
    assert _ffmpeg_writing_to(out) == []
    assert not (out / "talk" / "talk_720p.mp4").exists()

    # Nothing of the cancelled DAG waits to run: the next command would otherwise pick it up.
    url = EmbeddedServer(Path(cli.env["MEDIAPIPE_HOME"])).url
    client = Client(redis.Redis.from_url(url), namespace="mp")
    counts = client.queue_counts("default")
    assert counts["waiting"] == counts["delayed"] == counts["active"] == 0, counts
