"""stages.gpu_images: which inputs may take the GPU path, and that it renders what render() does.

The eligibility tests read headers only and run everywhere. The rendering tests need torch
and torchvision; they run on the GPU when there is one and on PyTorch's CPU device
otherwise, which executes the same code (decode, antialiased resize, JPEG encode) with
libjpeg-turbo standing in for nvJPEG. Every GPU-path output is compared with what
stages.image.render writes for the same input: same names and sizes, and pixels within a
PSNR bound, since the decoder, the resize filter and the JPEG encoder differ.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pyvips

from pipeline.errors import BadInputError
from stages import gpu_images
from stages.gpu_images import RenderRequest, gpu_ineligible, render_batch, torch_available
from stages.image import KEEP_FLAGS, render

LOADERS = {"webp": "webpload", "avif": "heifload", "jpg": "jpegload"}

needs_torch = pytest.mark.skipif(
    not torch_available(),
    reason="torch and torchvision are not importable here (the gpu extra is not installed)",
)

# The least PSNR, in dB, of a GPU-path rendition against render()'s, per input of the
# equivalence batch, over every width and format. Measured on PyTorch's CPU device
# (torch 2.13.0, torchvision 0.28.0, libvips 8.18.7), least .. most:
#   large    42.8 (256w webp) .. 56.2 (2048w jpeg)   smooth gradients
#   texture  32.3 (256w avif) .. 45.1 (1024w jpeg)   perlin noise and text, 1300x975
#   tagged   32.5 (256w avif) .. 40.7 (512w jpeg)    the same kind, 1001x667, progressive
#   small    identical pixels                        no resize, and libjpeg-turbo on both sides
# A shift by one pixel of texture at 1024w scores 29 dB before encoding, swapped channels
# 18 dB. On a GPU, nvJPEG's IDCT and chroma upsampling and its 4:4:4 encoder differ from
# libjpeg-turbo's, so "small" gets the floor of the other textured inputs.
MIN_PSNR = {"large": 40.0, "texture": 30.0, "tagged": 30.0, "small": 30.0}


def _open(path: str | Path) -> Any:
    return pyvips.Image.new_from_file(str(path))


def _pixels(path: str | Path) -> bytes:
    return bytes(_open(path).write_to_memory())


def _psnr(a: str | Path, b: str | Path) -> float:
    diff = _open(a).cast("float") - _open(b).cast("float")
    mse = float((diff * diff).avg())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _listing(directory: Path) -> list[str]:
    """Every entry, hidden ``.part`` files included."""
    return sorted(os.listdir(directory)) if directory.exists() else []


def _texture(width: int, height: int, seed: int) -> Any:
    """Detail at several scales plus sharp text: harder to resize alike than a gradient."""
    bands = [
        pyvips.Image.perlin(width, height, cell_size=cell, uchar=True, seed=seed + i)
        for i, cell in enumerate((48, 24, 12))
    ]
    image = bands[0].bandjoin(bands[1:])
    text = pyvips.Image.text("mediapipe 0123456789", dpi=200)
    return image.insert(text.bandjoin([text, text]), 30, 30).copy(interpretation="srgb")


def _srgb_tagged(image: Any) -> Any:
    tagged = image.copy()
    tagged.set_type(pyvips.GValue.blob_type, "icc-profile-data", pyvips.Image.profile_load("srgb"))
    return tagged


def _summary(result: dict[str, Any]) -> list[tuple[str, int, int, str, str, Any]]:
    """What must match render() exactly: names, sizes, formats, kinds."""
    return [
        (Path(r["path"]).name, r["width"], r["height"], r["format"], r["kind"], r["duration"])
        for r in result["renditions"]
    ]


class _Records(logging.Handler):
    """The fallback log lines, for a module-scoped fixture (caplog is per test)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _render_logged(requests: list[RenderRequest], device: str) -> tuple[list[Any], list[str]]:
    logger = logging.getLogger("mediapipe.gpu_images")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return render_batch(requests, device=device, encode_threads=2), handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# Eligibility: headers only, no torch needed.


@pytest.mark.parametrize(
    ("name", "options", "reasons"),
    [
        ("cmyk.jpg", {}, ["CMYK"]),
        ("icc_profile.jpg", {}, ["ICC profile not sRGB"]),
        ("sixteen_bit.png", {}, ["not a JPEG (pngload", "16-bit"]),
        ("alpha.png", {}, ["not a JPEG (pngload", "alpha channel"]),
        ("animated.gif", {"animated": True}, ["not a JPEG (gifload", "animated"]),
        ("large.jpg", {"keep": "icc"}, ["keep metadata requested"]),
        ("large.jpg", {"fail_on": "warning"}, ["fail_on=warning"]),
    ],
)
def test_inputs_the_gpu_cannot_render_exactly_fall_back_with_a_reason(
    name: str, options: dict[str, Any], reasons: list[str], media: Path
) -> None:
    reason = gpu_ineligible(media / name, options)
    assert reason is not None
    for part in reasons:
        assert part in reason, (part, reason)


def test_exif_rotation_falls_back_naming_the_orientation(
    media: Path, expected: dict[str, Any]
) -> None:
    orientation = expected["files"]["photo_exif_rotated.jpg"]["orientation"]
    assert orientation != 1
    assert gpu_ineligible(media / "photo_exif_rotated.jpg", {}) == f"EXIF orientation {orientation}"


def test_fixture_facts_agree_with_the_reasons(expected: dict[str, Any]) -> None:
    # The reasons above rest on these facts; if a fixture is rebuilt differently, this
    # says which premise moved rather than letting the reason tests fail obscurely.
    files = expected["files"]
    assert files["cmyk.jpg"]["interpretation"] == "cmyk"
    assert files["icc_profile.jpg"]["icc_profile"] == "sP3C"
    assert files["sixteen_bit.png"]["bits_per_sample"] == 16
    assert files["animated.gif"]["frames"] > 1
    large = files["large.jpg"]
    assert (large["format"], large["bands"], large["orientation"]) == ("jpeg", 3, 1)
    assert (large["icc_profile"], large["bits_per_sample"]) == (None, 8)


def test_plain_and_srgb_tagged_jpegs_are_eligible(media: Path, tmp_path: Path) -> None:
    assert gpu_ineligible(media / "large.jpg", {}) is None
    # An sRGB profile needs no transform (render() skips it too): the pixels are as stored.
    tagged = tmp_path / "tagged.jpg"
    _srgb_tagged(_texture(300, 200, 1)).jpegsave(str(tagged), keep=KEEP_FLAGS["icc"])
    assert "icc-profile-data" in _open(tagged).get_fields()
    assert gpu_ineligible(tagged, {"keep": "none", "animated": True}) is None
    grey = tmp_path / "grey.jpg"
    _texture(300, 200, 1)[0].copy(interpretation="b-w").jpegsave(str(grey))
    assert gpu_ineligible(grey, {}) == "greyscale"


def test_errors_are_render_errors_not_fallbacks(media: Path, tmp_path: Path) -> None:
    # Over the pixel limit, unreadable, or a bad option: the very error render() raises.
    cases: list[tuple[Path, dict[str, Any]]] = [
        (media / "large.jpg", {"max_pixels": 1_000_000}),
        (media / "not_an_image.jpg", {}),
        (tmp_path / "missing.jpg", {}),
        (media / "large.jpg", {"formats": ["gif"]}),
        (media / "large.jpg", {"widths": [0]}),
        (media / "large.jpg", {"keep": "everything"}),
    ]
    for src, options in cases:
        with pytest.raises(BadInputError) as cpu:
            render(src, tmp_path / "out", **options)
        with pytest.raises(BadInputError) as gpu:
            gpu_ineligible(src, options)
        assert str(gpu.value) == str(cpu.value)
    assert _listing(tmp_path / "out") == []


def test_a_cut_off_jpeg_is_caught_past_an_exif_thumbnail(media: Path) -> None:
    data = (media / "large.jpg").read_bytes()
    assert gpu_images._has_end_marker(data)
    assert not gpu_images._has_end_marker(data[: len(data) // 2])
    # An EXIF thumbnail is a whole JPEG, scan and end marker included, inside APP1: a
    # search for the end marker would find the thumbnail's and miss the cut.
    thumb = (media / "cmyk.jpg").read_bytes()
    payload = b"Exif\x00\x00" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    with_thumb = data[:2] + app1 + data[2:]
    assert gpu_images._has_end_marker(with_thumb)
    assert not gpu_images._has_end_marker(with_thumb[: len(with_thumb) // 2])


def test_the_module_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "import stages.gpu_images as g\n"
        "assert not g.torch_available()\n"
        "print(g.gpu_ineligible(__import__('pathlib').Path('fixtures/cmyk.jpg'), {}))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "CMYK"


# Rendering: torch and torchvision on the GPU, or on the CPU device without one.


@pytest.fixture(scope="module")
def batch(media: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Several eligible JPEGs through render_batch and through render(), once."""
    inputs = tmp_path_factory.mktemp("inputs")
    _texture(1300, 975, 1).jpegsave(str(inputs / "texture.jpg"), Q=92)
    # Progressive, sRGB-tagged and an odd size: still eligible, and every height rounds.
    _srgb_tagged(_texture(1001, 667, 7)).jpegsave(
        str(inputs / "tagged.jpg"), Q=90, interlace=True, keep=KEEP_FLAGS["icc"]
    )
    # Narrower than every width: one rendition at its own width, no resize at all.
    _texture(200, 150, 3).jpegsave(str(inputs / "small.jpg"), Q=90)
    sources = [
        media / "large.jpg",
        *(inputs / n for n in ("texture.jpg", "tagged.jpg", "small.jpg")),
    ]
    gpu_out, cpu_out = tmp_path_factory.mktemp("gpu"), tmp_path_factory.mktemp("cpu")
    results, log = _render_logged([RenderRequest(src, gpu_out) for src in sources], _device())
    return {
        "sources": sources,
        "gpu": results,
        "cpu": [render(src, cpu_out) for src in sources],
        "log": log,
        "gpu_out": gpu_out,
        "cpu_out": cpu_out,
    }


@needs_torch
def test_gpu_batch_has_the_names_sizes_and_shape_of_render(batch: dict[str, Any]) -> None:
    assert batch["log"] == []  # nothing fell back: every input went through the device
    for gpu, cpu in zip(batch["gpu"], batch["cpu"], strict=True):
        assert isinstance(gpu, dict), gpu
        assert gpu.keys() == cpu.keys()
        assert gpu["source"] == cpu["source"]
        assert _summary(gpu) == _summary(cpu)
        for r in gpu["renditions"]:
            assert r.keys() == cpu["renditions"][0].keys()
            assert Path(r["path"]).parent == batch["gpu_out"]
            assert r["bytes"] == Path(r["path"]).stat().st_size and len(r["sha256"]) == 64
    assert _listing(batch["gpu_out"]) == _listing(batch["cpu_out"])  # no .part left over
    small = batch["gpu"][-1]["renditions"]
    assert {(r["width"], r["height"]) for r in small} == {(200, 150)}


@needs_torch
def test_gpu_outputs_decode_in_the_format_their_extension_names(batch: dict[str, Any]) -> None:
    for result in batch["gpu"]:
        for r in result["renditions"]:
            img = _open(r["path"])
            ext = r["path"].rsplit(".", 1)[1]
            assert img.get("vips-loader") == LOADERS[ext]
            assert (img.width, img.height) == (r["width"], r["height"])
            assert (img.bands, img.format, img.interpretation) == (3, "uchar", "srgb")
            # Metadata is stripped as render() strips it (the sRGB tag included).
            assert "icc-profile-data" not in img.get_fields()
            assert 0 < img.avg() < 255  # avg() decodes every pixel: the file is whole


@needs_torch
def test_gpu_pixels_are_close_to_render(batch: dict[str, Any]) -> None:
    for src, gpu, cpu in zip(batch["sources"], batch["gpu"], batch["cpu"], strict=True):
        floor = MIN_PSNR[src.stem]
        for g, c in zip(gpu["renditions"], cpu["renditions"], strict=True):
            psnr = _psnr(g["path"], c["path"])
            assert psnr >= floor, (Path(g["path"]).name, round(psnr, 1), floor)


@needs_torch
def test_mixed_batch_renders_fallbacks_exactly_as_render(media: Path, tmp_path: Path) -> None:
    names = ["large.jpg", "cmyk.jpg", "photo_exif_rotated.jpg", "icc_profile.jpg"]
    requests = [RenderRequest(media / n, tmp_path / "batch", {"widths": [512]}) for n in names]
    results, log = _render_logged(requests, _device())
    assert [line.split(": ", 1)[0] for line in log] == [str(media / n) for n in names[1:]]
    for name, result in zip(names, results, strict=True):
        assert isinstance(result, dict), result
        cpu = render(media / name, tmp_path / "cpu", widths=[512])
        assert _summary(result) == _summary(cpu)
        if name == "large.jpg":
            continue  # rendered on the device: compared by PSNR above
        for g, c in zip(result["renditions"], cpu["renditions"], strict=True):
            assert _pixels(g["path"]) == _pixels(c["path"]), g["path"]
    rotated = results[2]["renditions"][0]
    assert (rotated["width"], rotated["height"]) == (240, 320)  # displayed, not stored


def _cut_off(media: Path, tmp_path: Path) -> Path:
    data = (media / "large.jpg").read_bytes()
    src = tmp_path / "cut.jpg"
    src.write_bytes(data[: len(data) * 2 // 5])  # the header reads fine: the scan stops
    return src


def _good(tmp_path: Path) -> list[Path]:
    good = [tmp_path / "good0.jpg", tmp_path / "good1.jpg"]
    for i, path in enumerate(good):
        _texture(400, 300, i).jpegsave(str(path))
    return good


def _check_one_failed(results: list[Any], bad: list[Path], out: Path) -> None:
    for result, src in zip(results, bad, strict=True):
        if src.stem.startswith("good"):
            assert isinstance(result, dict), result
            assert len(result["renditions"]) == 3
        else:
            assert isinstance(result, BadInputError), result
            assert str(src) in str(result)
            # Not a final name, not a .part file: nothing of it in the output folder.
            assert not [n for n in _listing(out) if src.stem in n]


@needs_torch
def test_a_corrupt_jpeg_fails_alone(media: Path, tmp_path: Path) -> None:
    good = _good(tmp_path)
    cut = _cut_off(media, tmp_path)
    sources = [good[0], cut, media / "not_an_image.jpg", good[1]]
    out = tmp_path / "out"
    results, log = _render_logged(
        [RenderRequest(s, out, {"widths": [256]}) for s in sources], _device()
    )
    _check_one_failed(results, sources, out)
    assert "cannot decode image" in str(results[1])  # render()'s own error for it
    assert log == [f"{cut}: rendered on the CPU (no end-of-image marker after the first scan)"]


@needs_torch
def test_a_batch_the_decoder_refuses_is_retried_one_by_one(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the end-marker check off, the cut-off file reaches the decoder and fails the
    # batched call; the others are then decoded one by one on the device, and the cut-off
    # one goes to render(), which rejects it. The CPU device is used even on a GPU box:
    # libjpeg-turbo's refusal of a cut-off scan is documented, nvJPEG's is not.
    monkeypatch.setattr(gpu_images, "_has_end_marker", lambda data: True)
    good = _good(tmp_path)
    cut = _cut_off(media, tmp_path)
    sources = [good[0], cut, good[1]]
    out = tmp_path / "out"
    results, log = _render_logged(
        [RenderRequest(s, out, {"widths": [256]}) for s in sources], "cpu"
    )
    _check_one_failed(results, sources, out)
    assert log == [f"{cut}: the decoder refused it; rendered on the CPU"]
