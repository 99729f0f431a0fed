"""What a video encode reports from ffmpeg's ``-progress`` lines (stages/ffmpeg_run.py)."""

from __future__ import annotations

import time
from typing import Any

from stages.ffmpeg_run import _report


def _reports(state: dict[str, str], fps: float | None) -> list[tuple[float, dict[str, Any]]]:
    out: list[tuple[float, dict[str, Any]]] = []
    started = time.monotonic() - 2.0
    _report(state, 10.0, started, lambda pct, _label, **f: out.append((pct, f)), "x264", fps)
    return out


def test_before_the_first_video_frame_ffmpegs_own_figures_are_not_shown() -> None:
    # As ffmpeg writes it while x264 fills its lookahead and the audio runs ahead.
    state = {"frame": "0", "fps": "0.00", "out_time_us": "3240000", "speed": "1.8x",
             "progress": "continue"}  # fmt: skip
    ((pct, fields),) = _reports(state, 30.0)
    assert pct == 0.0 and "fps" not in fields and "speed" not in fields


def test_frames_give_fps_and_speed_that_agree_with_the_source_rate() -> None:
    state = {"frame": "60", "fps": "0.00", "out_time_us": "3240000", "speed": "1.8x",
             "progress": "continue"}  # fmt: skip
    ((pct, fields),) = _reports(state, 30.0)
    assert 19.0 < pct < 21.0  # 60 frames of a 10 s, 30 fps source
    assert abs(fields["fps"] - 30 * fields["speed"]) < 0.5


def test_the_end_is_100_percent_even_with_no_frame_counted() -> None:
    state = {"frame": "0", "out_time_us": "10000000", "progress": "end"}
    ((pct, _fields),) = _reports(state, 30.0)
    assert pct == 100.0


def test_without_a_source_rate_ffmpegs_fields_are_passed_on() -> None:
    state = {"fps": "24.0", "out_time_us": "5000000", "speed": "2.0x", "progress": "continue"}
    ((pct, fields),) = _reports(state, None)
    assert pct == 50.0 and fields["fps"] == 24.0 and fields["speed"] == 2.0
