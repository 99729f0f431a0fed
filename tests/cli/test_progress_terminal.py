"""The live progress display, seen through a real pseudo-terminal."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pexpect

from stages.ffmpeg_run import ffmpeg_exe
from tests.cli.conftest import Cli, pty_env


def _longer_video(path: Path) -> None:
    subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=640x360:r=25:d=12",
            "-f",
            "lavfi",
            "-i",
            "sine=d=12",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
            str(path),
        ],
        check=True,
        timeout=120,
    )


def test_bars_move_and_finish_under_a_terminal(cli: Cli, tmp_path: Path) -> None:
    video = tmp_path / "talk.mp4"
    _longer_video(video)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "mediajobs", "submit", str(video), "--out", str(tmp_path / "out")],
        cwd=str(cli.cwd),
        env=pty_env(cli.env),
        encoding="utf-8",
        timeout=180,
        dimensions=(30, 160),
    )
    child.expect(pexpect.EOF)
    child.close()
    screen = child.before or ""
    assert child.exitstatus == 0, screen
    percents = {float(p) for p in re.findall(r"(\d{1,3}\.\d)%", screen)}
    assert len(percents) >= 3, percents  # the bar moved through several values
    assert 100.0 in percents
    assert "talk.mp4" in screen and "completed" in screen
    assert "\x1b[" in screen  # drawn with terminal control sequences, not plain lines
    assert "video_ladder" in screen  # the running stage was shown
