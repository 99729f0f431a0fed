"""A rejected or failed input is one line that names the file once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mediajobs.cli import _with_path
from mediajobs.planning import OutcomeStatus, plan
from stages.ffmpeg_run import ffmpeg_exe


def test_a_stage_error_naming_the_absolute_path_is_not_prefixed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stages get the resolved path; the user typed a relative one, through a symlink.
    (tmp_path / "in").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "in")
    monkeypatch.chdir(tmp_path / "work")
    absolute = (tmp_path / "in" / "bad.jpg").resolve()
    for typed in ("../in/bad.jpg", "../link/bad.jpg", str(tmp_path / "link" / "bad.jpg")):
        line = _with_path(f"{absolute}: Premature end of JPEG file", typed)
        assert line == f"{absolute}: Premature end of JPEG file", typed
    assert _with_path("DAG failed", "../in/bad.jpg") == "../in/bad.jpg: DAG failed"
    assert _with_path("../in/bad.jpg: empty file (0 bytes)", "../in/bad.jpg").count("bad") == 1


def test_an_audio_only_input_is_rejected_naming_the_file(tmp_path: Path) -> None:
    song = tmp_path / "song.m4a"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", "sine=duration=0.5", "-c:a", "aac", str(song)],
        check=True,
    )  # fmt: skip
    # plan() is what submit (its lines and --json) and the schedules report from.
    [planned] = plan([str(song)], "auto", str(tmp_path / "out"))
    assert planned.dag is None and planned.status is OutcomeStatus.REJECTED
    assert planned.error is not None and "\n" not in planned.error
    assert planned.error.startswith(f"{song}: no preset for media of kind 'audio'")
    assert _with_path(planned.error, song) == planned.error
