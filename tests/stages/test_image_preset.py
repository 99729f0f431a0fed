"""The default image preset encodes AVIF with the settings issue 20's measurement chose
(benchmarks/image_encoders.py; the figures are in the preset's comments and in
docs/benchmarks.md), and those settings reach libvips' encoder as the preset's DAG runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pyvips

from mediajobs import presets
from stages.image import image_renditions, render
from tests.stages.conftest import RecordingContext

# aom at effort 2 (cpu-used 7) and Q 53, instead of libvips' default effort 4 at Q 50.
CHOSEN_AVIF = {"effort": 2, "quality": 53}


def _stage_params(src: Path, out: Path) -> dict[str, Any]:
    """The image_renditions job's params as the default preset's DAG carries them."""
    dag = presets.build_dag(str(src), str(out), presets.load("image"), name="p")
    return dict(dag.nodes["image_renditions"].params)


@pytest.fixture(scope="module")
def photo(media: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """large.jpg made 600 px wide, so the preset makes two widths (512, 256) quickly."""
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    pyvips.Image.thumbnail(str(media / "large.jpg"), 600).jpegsave(str(path), Q=95)
    return path


def test_the_default_preset_asks_for_the_measured_avif_effort_and_q() -> None:
    table = presets.load("image")["image_renditions"]
    assert table["effort"]["avif"] == CHOSEN_AVIF["effort"]
    assert table["quality"]["avif"] == CHOSEN_AVIF["quality"]
    assert "avif" in table["formats"]


def test_the_preset_avif_renditions_decode_at_their_size(photo: Path, tmp_path: Path) -> None:
    params = _stage_params(photo, tmp_path / "out")
    result = image_renditions(RecordingContext(), params, {})
    avifs = [r for r in result["renditions"] if r["format"] == "avif"]
    source = pyvips.Image.new_from_file(str(photo))
    assert [r["width"] for r in avifs] == [512, 256]
    for r in avifs:
        img = pyvips.Image.new_from_file(r["path"])
        assert img.get("vips-loader") == "heifload"
        assert img.get("heif-compression") == "av1"
        expected_height = round(source.height * r["width"] / source.width)
        assert (img.width, img.height) == (r["width"], expected_height)
        # Every pixel decodes, and the picture is the photo's, not a blank frame.
        assert abs(img.avg() - source.avg()) < 10


def test_the_preset_avif_is_encoded_at_the_chosen_effort(photo: Path, tmp_path: Path) -> None:
    params = _stage_params(photo, tmp_path / "preset")
    made = image_renditions(RecordingContext(), params, {})
    preset_avif = {
        r["width"]: Path(r["path"]).read_bytes()
        for r in made["renditions"]
        if r["format"] == "avif"
    }

    def avif_with(effort: int | None, out: str) -> dict[int, bytes]:
        result = render(
            photo,
            tmp_path / out,
            widths=params["widths"],
            formats=["avif"],
            quality={"avif": CHOSEN_AVIF["quality"]},
            effort=None if effort is None else {"avif": effort},
        )
        return {r["width"]: Path(r["path"]).read_bytes() for r in result["renditions"]}

    # aom is deterministic: the same pixels and settings give the same bytes.
    assert avif_with(CHOSEN_AVIF["effort"], "explicit") == preset_avif
    assert avif_with(None, "libvips-default-effort") != preset_avif
