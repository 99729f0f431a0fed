"""probe: facts from real files, and a clear permanent error for everything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import BadInputError
from stages.limits import MediaLimits
from stages.output import sha256_of
from stages.probe import probe


def test_video_facts(media: Path) -> None:
    f = probe(media / "clip.mp4")
    assert f["kind"] == "video" and f["codec"] == "h264"
    assert (f["width"], f["height"], f["rotation"]) == (320, 240, 0)
    assert f["duration"] == pytest.approx(2.0, abs=0.05)
    assert f["fps"] == pytest.approx(25.0)
    assert [a["codec"] for a in f["audio"]] == ["aac"]
    assert f["bytes"] == (media / "clip.mp4").stat().st_size
    assert f["sha256"] == sha256_of(media / "clip.mp4")


def test_rotated_video_reports_displayed_size(media: Path) -> None:
    f = probe(media / "rotated_phone.mp4")
    assert (f["stored_width"], f["stored_height"]) == (320, 180)
    assert (f["width"], f["height"]) == (180, 320)
    assert f["rotation"] in (90, 270)


def test_video_without_audio(media: Path) -> None:
    f = probe(media / "no_audio.mp4")
    assert f["kind"] == "video" and f["audio"] == []


def test_audio_only(media: Path) -> None:
    f = probe(media / "silent_audio.m4a")
    assert f["kind"] == "audio" and f["audio"][0]["codec"] == "aac"


def test_image_facts_honour_exif_orientation(media: Path) -> None:
    f = probe(media / "photo_exif_rotated.jpg")
    assert f["kind"] == "image"
    assert (f["stored_width"], f["stored_height"]) == (320, 240)
    assert (f["width"], f["height"], f["orientation"]) == (240, 320, 6)


def test_animated_gif_counts_pages(media: Path) -> None:
    f = probe(media / "animated.gif")
    assert f["kind"] == "image" and f["pages"] > 1 and (f["width"], f["height"]) == (100, 80)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.mp4", "corrupt"),
        ("empty.mp4", "empty file (0 bytes)"),
        ("not_an_image.jpg", "unsupported or corrupt media"),
        ("evil.m3u8", "unsupported or corrupt media"),
        ("evil.mp4", "unsupported or corrupt media"),
    ],
)
def test_bad_inputs_fail_permanently_naming_file_and_reason(
    media: Path, name: str, reason: str
) -> None:
    with pytest.raises(BadInputError) as info:
        probe(media / name)
    message = str(info.value)
    assert str(media / name) in message and reason in message
    assert "\n" not in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        probe(tmp_path / "nope.mp4")
    with pytest.raises(BadInputError, match="is a directory"):
        probe(tmp_path)


def test_decompression_bomb_is_refused_from_the_header(media: Path) -> None:
    with pytest.raises(BadInputError, match="exceeds the limit of 1000000 pixels"):
        probe(media / "large.jpg", MediaLimits(max_image_pixels=1_000_000))
    with pytest.raises(BadInputError, match="exceeds the limit"):
        probe(media / "clip.mp4", MediaLimits(max_video_pixels=320 * 200))
    with pytest.raises(BadInputError, match="duration"):
        probe(media / "clip.mp4", MediaLimits(max_duration=1.0))
