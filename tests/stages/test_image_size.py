"""Output sizes read from the first bytes of a JPEG or WebP agree with libvips' decoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pyvips

from stages.media_facts import image_facts, image_size
from stages.output import sha256_of

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _saved(tmp_path: Path, name: str, width: int, height: int, **save: Any) -> Path:
    radius = min(width, height) // 3
    img = pyvips.Image.black(width, height, bands=3)
    img = img.draw_circle([200, 40, 90], width // 2, height // 2, radius, fill=True)
    if save.pop("alpha", False):
        img = img.bandjoin(255)
    path = tmp_path / name
    img.write_to_file(str(path), **save)
    return path


@pytest.mark.parametrize(
    ("name", "save"),
    [
        ("baseline.jpg", {}),
        ("progressive.jpg", {"interlace": True}),
        ("optimised.jpg", {"optimize_coding": True, "Q": 85}),
        ("lossy.webp", {"Q": 80}),
        ("lossless.webp", {"lossless": True}),
        ("alpha.webp", {"alpha": True}),  # extended (VP8X) header
    ],
)
@pytest.mark.parametrize(("width", "height"), [(1, 1), (17, 9), (1601, 1067), (200, 4000)])
def test_the_header_size_matches_libvips(
    tmp_path: Path, name: str, save: dict[str, Any], width: int, height: int
) -> None:
    path = _saved(tmp_path, name, width, height, **save)
    img = pyvips.Image.new_from_file(str(path))
    assert image_size(path.read_bytes()) == (img.width, img.height) == (width, height)


def test_fixtures_and_formats_without_a_header_parser(tmp_path: Path) -> None:
    # A JPEG with a large EXIF block before its frame header, and an animated WebP.
    rotated = FIXTURES / "photo_exif_rotated.jpg"
    assert image_size(rotated.read_bytes()) == (320, 240)  # as stored, like libvips
    strip = pyvips.Image.new_from_file(str(FIXTURES / "animated.gif"), n=-1)
    strip.write_to_file(str(tmp_path / "anim.webp"))
    frame = pyvips.Image.new_from_file(str(tmp_path / "anim.webp"))
    assert image_size((tmp_path / "anim.webp").read_bytes()) == (frame.width, frame.height)
    # No parser (PNG, AVIF) or a mangled header: None, and image_facts asks libvips.
    png = _saved(tmp_path, "x.png", 30, 20)
    assert image_size(png.read_bytes()) is None
    assert image_size(b"\xff\xd8\xff\xe0\x00") is None
    assert image_size(b"RIFF\x00\x00\x00\x00WEBPVP8 ") is None
    facts = image_facts(png, "png")
    assert (facts["width"], facts["height"]) == (30, 20)
    assert facts["bytes"] == png.stat().st_size and facts["sha256"] == sha256_of(png)
