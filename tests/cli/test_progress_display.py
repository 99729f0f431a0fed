"""The progress display of `mediapipe submit`, read off a real pseudo-terminal frame by
frame: states, percents that never drop, DAG- and batch-level ETAs, a layout that drops
columns rather than squeezing words at 60 columns, and 120 inputs in 40 lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
import pyvips

from stages.ffmpeg_run import ffmpeg_exe
from tests.cli.conftest import Cli, pty_env

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# rich's Live erases its previous frame with "erase line, cursor up" pairs.
FRAME_BREAK = re.compile(r"(?:\x1b\[2K\x1b\[1A)+\x1b\[2K")
PERCENT = re.compile(r" (\d{1,3}\.\d)% ")
ETA = re.compile(r"eta \d+:\d\d")


def _clip(path: Path, size: str, seconds: int) -> None:
    """A 30 fps clip with sound (testsrc2), encoded fast."""
    subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=s={size}:r=30:d={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=d={seconds}",
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


def _photos(folder: Path, n: int) -> list[str]:
    folder.mkdir()
    paths = []
    for i in range(n):
        p = folder / f"photo{i:03d}.jpg"
        pyvips.Image.black(48, 32).write_to_file(str(p))
        paths.append(str(p))
    return paths


def _submit_in_pty(cli: Cli, args: list[str], rows: int, cols: int) -> tuple[int, str]:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "mediajobs", "submit", *args, "--out", str(cli.cwd / "out")],
        cwd=str(cli.cwd),
        env=pty_env(cli.env),
        encoding="utf-8",
        timeout=240,
        dimensions=(rows, cols),
    )
    child.expect(pexpect.EOF)
    child.close()
    return int(child.exitstatus or 0), child.before or ""


def _frames(screen: str) -> list[list[str]]:
    """The live display's frames, each as its visible lines (the summary printed after
    the last frame is cut off at the summary's header)."""
    body = screen.split("input ", 1)[0]
    frames = []
    for raw in FRAME_BREAK.split(body):
        lines = [ANSI.sub("", line).rstrip("\r") for line in raw.split("\n")]
        lines = [line for line in lines if line.strip()]
        if lines:
            frames.append(lines)
    return frames


def _percents(frames: list[list[str]], label: str) -> list[float]:
    out = []
    for frame in frames:
        for line in frame:
            if line.startswith(label):
                m = PERCENT.search(line)
                if m:
                    out.append(float(m.group(1)))
    return out


# Serial (alone under xdist): with every core busy, x264's lookahead holds the first frames
# while the audio runs ahead, and the display shows ffmpeg's own fields for a while ("32 %
# ... 0 fps 1.8x"), which the fps = 30 x speed check rightly refuses; alone it gets frames.
@pytest.mark.serial
@pytest.mark.parametrize("cols", [200, 60])
def test_states_percents_and_etas_at_200_and_60_columns(
    cli: Cli, tmp_path: Path, cols: int
) -> None:
    video = tmp_path / "talk.mp4"
    _clip(video, "1280x720", 5)
    photo = _photos(tmp_path / "in", 1)[0]
    # Two slots: the transcode takes both (cost 2), so the other jobs visibly wait.
    code, screen = _submit_in_pty(cli, [str(video), photo, "--concurrency", "2"], 30, cols)
    assert code == 0, screen
    frames = _frames(screen)
    lines = [line for frame in frames for line in frame]
    assert len(frames) >= 5, screen
    assert all(len(line) <= cols for line in lines), [ln for ln in lines if len(ln) > cols]
    text = "\n".join(lines)
    # Explicit states, whole words at 60 columns too (no "6… video_la… et…").
    assert "queued — waiting for a slot" in text
    assert "running video_ladder" in text
    assert "…" not in text
    for label in ("talk.mp4", "photo000.jpg"):
        shown = _percents(frames, label)
        assert shown == sorted(shown), (label, shown)  # never backwards
        assert shown[-1] == 100.0
    assert len(set(_percents(frames, "talk.mp4"))) >= 4  # it moved, and was weighted:
    # when the photo's three jobs finish before the transcode (the usual order, not a
    # certain one: which file the two slots take first is a race), the batch, weighted by
    # cost, is far from half done at "1/2 done".
    batch = [line for line in lines if re.match(r"\d/2 done", line)]
    assert batch and batch[-1].startswith("2/2 done"), batch
    one_done = [float(PERCENT.search(line).group(1)) for line in batch if "1/2 done" in line]
    assert not one_done or min(one_done) < 20, one_done
    # ETAs: for the DAG while it runs, and for the batch.
    assert any(ETA.search(line) for line in lines if line.startswith("talk.mp4")), text
    assert any(ETA.search(line) for line in batch), batch
    if cols == 200:
        # fps and speed agree with the 30 fps source: fps = speed x 30.
        rates = re.findall(r"(\d+) fps (\d+\.\d)x", text)
        assert rates, text
        for fps, speed in rates:
            assert abs(float(fps) - 30 * float(speed)) <= 30 * 0.05 + 1, (fps, speed)


def test_120_inputs_in_40_lines_show_one_batch_bar_above_the_running_files(
    cli: Cli, tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "in", 120)
    code, screen = _submit_in_pty(cli, [*photos, "--concurrency", "2"], 40, 100)
    assert code == 0, screen
    frames = _frames(screen)
    assert len(frames) >= 5
    assert max(len(f) for f in frames) < 40, max(len(f) for f in frames)
    for frame in frames:
        assert re.match(r"\d+/120 done", frame[0]), frame[0]  # the batch bar first
        # finished files collapse into the batch bar: only unfinished ones are listed
        assert not any("completed" in line for line in frame[1:]), frame
    done = [int(f[0].split("/", 1)[0]) for f in frames]
    assert done == sorted(done) and done[-1] == 120
    batch = [float(PERCENT.search(f[0]).group(1)) for f in frames]
    assert batch == sorted(batch) and batch[-1] == 100.0
    assert any("files/s" in f[0] and re.search(r"\d\.\d files/s", f[0]) for f in frames)
    assert any(ETA.search(f[0]) for f in frames[:-1])
    assert any("running image_renditions" in line for f in frames for line in f[1:])
    # every running file's own percent never drops either
    for name in ("photo000.jpg", "photo060.jpg", "photo119.jpg"):
        shown = _percents(frames, name)
        assert shown == sorted(shown), (name, shown)
    summary = screen.split("input ", 1)[1]
    assert summary.count("completed") == 120


def test_120_inputs_without_a_terminal_print_batch_lines_not_a_line_per_job(
    cli: Cli, tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "in", 120)
    done = cli.run(
        "submit", *photos, "--concurrency", "2", "--out", str(tmp_path / "out"), timeout=240
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    batch = [line for line in lines if line.startswith("batch: ")]
    assert batch and batch[-1].startswith("batch: 120/120 done, 100.0%"), lines
    assert len(lines) == len(batch) < 40, lines  # no line per file or per job
    shown = [float(re.search(r"(\d+\.\d)%", line).group(1)) for line in batch]  # type: ignore[union-attr]
    assert shown == sorted(shown)
    assert "files/s" in batch[-1] and "eta" in batch[-1]
