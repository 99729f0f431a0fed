"""A full disk met by libvips or ffmpeg (not an OSError in Python: a pyvips.Error, an
ffmpeg exit code) is the same DiskFullError as one met by Python's own writes: retryable,
one line that names what was being written, and no partial file left behind. Each case
writes into a real filesystem too small for its output (a tmpfs; mounting needs root)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import DiskFullError, RetryableError
from stages.image import image_renditions
from stages.probe import probe
from stages.video import video_ladder
from tests import helpers
from tests.stages.conftest import RecordingContext


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with helpers.small_disk(tmp_path / "small", "96k") as where:
        yield where


def _assert_one_line_disk_full(exc: BaseException, out: Path) -> None:
    assert isinstance(exc, DiskFullError) and isinstance(exc, RetryableError)
    message = str(exc)
    assert message.startswith("no space left on device"), message
    assert "\n" not in message
    assert str(out) in message


def _leftovers(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def test_libvips_meeting_a_full_disk(media: Path, small_disk: Path) -> None:
    src = media / "large.jpg"
    with pytest.raises(Exception) as info:
        image_renditions(
            RecordingContext(),
            {"input": str(src), "out_dir": str(small_disk)},
            {"probe": probe(src)},
        )
    _assert_one_line_disk_full(info.value, small_disk)
    # finished renditions may stay (the retry rewrites them); no partial one does
    assert not [p for p in _leftovers(small_disk) if ".part" in p]


def test_ffmpeg_meeting_a_full_disk(media: Path, small_disk: Path) -> None:
    src = media / "sample_720p.mp4"
    params = {"input": str(src), "out_dir": str(small_disk)}
    with pytest.raises(Exception) as info:
        video_ladder(RecordingContext(), params, {"probe": probe(src)})
    _assert_one_line_disk_full(info.value, small_disk)
    assert not [p for p in _leftovers(small_disk) if ".part" in p]
