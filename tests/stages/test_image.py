"""image_renditions on the sample media with the real libvips: sizes, colour, alpha, safety.

Pixels are read back from the written files, at the displayed coordinates that
fixtures/expected.json documents for each sample.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import pyvips

from pipeline.errors import BadInputError
from pipeline.registry import REGISTRY
from stages.image import _is_srgb, image_renditions, render
from stages.probe import probe
from tests.stages.conftest import RecordingContext

LOADERS = {"webp": "webpload", "avif": "heifload", "jpg": "jpegload"}
METADATA_FIELDS = ("exif-data", "icc-profile-data", "xmp-data", "iptc-data")
# Lossy encoders move flat colours by a few levels; a wrong conversion moves them by 20+.
TOL = 12


def _open(path: str | Path, **options: Any) -> Any:
    return pyvips.Image.new_from_file(str(path), **options)


def _pixel(path: str | Path, x: int, y: int) -> list[int]:
    return [round(v) for v in _open(path)(x, y)]


def _near(got: list[int], want: tuple[int, ...], tol: int = TOL) -> bool:
    return len(got) == len(want) and all(abs(g - w) <= tol for g, w in zip(got, want, strict=True))


def _by_ext(result: dict[str, Any]) -> dict[str, str]:
    """The path of each rendition by file extension (for results with one width)."""
    paths = [r["path"] for r in result["renditions"]]
    assert len({p.rsplit(".", 1)[1] for p in paths}) == len(paths)
    return {p.rsplit(".", 1)[1]: p for p in paths}


def _listing(directory: Path) -> list[str]:
    """Every entry, hidden ``.part`` files included."""
    return sorted(os.listdir(directory)) if directory.exists() else []


@pytest.fixture(scope="module")
def large(media: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """large.jpg with the default params through the stage function, once for the module."""
    src = media / "large.jpg"
    out = tmp_path_factory.mktemp("large")
    ctx = RecordingContext()
    params = {"input": str(src), "out_dir": str(out)}
    result = image_renditions(ctx, params, {"probe": probe(src)})
    return {"result": result, "ctx": ctx, "out": out}


def test_stage_is_registered_with_its_defaults() -> None:
    spec = REGISTRY.get("image_renditions")
    assert (spec.queue, spec.cost, spec.timeout, spec.attempts) == ("default", 1, 600, 3)


def test_large_jpeg_gets_every_width_in_every_format(large: dict[str, Any]) -> None:
    result = large["result"]
    assert result["source"] == {"width": 2400, "height": 1600}
    got = [(r["width"], r["height"], r["format"]) for r in result["renditions"]]
    # libvips rounds the height to nearest: 1600 * 2048 / 2400 = 1365.3 -> 1365, 682.7 -> 683.
    sizes = [(2048, 1365), (1024, 683), (512, 341), (256, 171)]
    assert got == [(w, h, f) for w, h in sizes for f in ("webp", "avif", "jpeg")]
    assert sorted(_listing(large["out"])) == sorted(
        f"large_{w}w.{ext}" for w, _ in sizes for ext in ("webp", "avif", "jpg")
    )
    for r in result["renditions"]:
        assert r["kind"] == "image" and r["duration"] is None and r["bytes"] > 0
        assert len(r["sha256"]) == 64
    assert result["stage_info"]["attempt"] == 1


def test_every_output_decodes_in_the_format_its_extension_names(large: dict[str, Any]) -> None:
    for r in large["result"]["renditions"]:
        img = _open(r["path"])
        ext = r["path"].rsplit(".", 1)[1]
        assert img.get("vips-loader") == LOADERS[ext]
        if ext == "avif":
            assert img.get("heif-compression") == "av1"
        assert (img.width, img.height) == (r["width"], r["height"])
        assert (img.bands, img.format, img.interpretation) == (3, "uchar", "srgb")
        # The red square at the top left (240 px of 2400) survives every width: a resize,
        # not a crop or a flip; and avg() decodes every pixel, so the file is whole.
        s = r["width"] / 2400
        assert _near(_pixel(r["path"], int(120 * s), int(120 * s)), (254, 0, 0))
        assert 0 < img.avg() < 255


def test_progress_is_reported_as_each_rendition_is_written(large: dict[str, Any]) -> None:
    reports = large["ctx"].reports
    assert [f["done"] for _, _, f in reports] == list(range(1, 13))
    assert {f["total"] for _, _, f in reports} == {12}
    assert {m for _, m, _ in reports} == {"renditions"}
    assert [p for p, _, _ in reports] == sorted(p for p, _, _ in reports)
    assert reports[-1][0] == 100


def test_never_upscales_and_a_smaller_image_gets_its_own_width(media: Path, tmp_path: Path) -> None:
    # photo_exif_rotated.jpg displays 240x320: both 2048 and 256 are wider than it, so it
    # gets one rendition at its own width rather than none or an upscaled one.
    result = render(media / "photo_exif_rotated.jpg", tmp_path / "photo", widths=[2048, 256])
    assert [(r["width"], r["height"]) for r in result["renditions"]] == [(240, 320)] * 3
    # alpha.png is 300 wide: 2048 is dropped, 256 kept once (duplicates are merged).
    result = render(media / "alpha.png", tmp_path / "alpha", widths=[256, 2048, 256])
    assert [(r["width"], r["height"]) for r in result["renditions"]] == [(256, 171)] * 3


def test_exif_orientation_is_applied(media: Path, tmp_path: Path) -> None:
    result = render(media / "photo_exif_rotated.jpg", tmp_path)
    for path in _by_ext(result).values():
        img = _open(path)
        assert (img.width, img.height) == (240, 320)  # portrait, as displayed
        assert "orientation" not in img.get_fields() or img.get("orientation") == 1
        # Orientation 6 turns the stored top-left red block to the displayed top right.
        assert _near(_pixel(path, 210, 40), (254, 0, 0)), path
        assert _near(_pixel(path, 210, 280), (0, 255, 1)), path
        assert _near(_pixel(path, 60, 160), (0, 0, 254)), path


def test_cmyk_is_converted_to_srgb(media: Path, tmp_path: Path) -> None:
    result = render(media / "cmyk.jpg", tmp_path)
    for path in _by_ext(result).values():
        img = _open(path)
        assert (img.bands, img.interpretation) == (3, "srgb")
        assert _near(_pixel(path, 50, 75), (0, 156, 228)), path  # cyan
        assert _near(_pixel(path, 150, 75), (234, 23, 133)), path  # magenta


def test_embedded_icc_profile_is_applied_then_stripped(media: Path, tmp_path: Path) -> None:
    result = render(media / "icc_profile.jpg", tmp_path)
    for path in _by_ext(result).values():
        # Display P3 values (234, 51, 35) shown as sRGB would be a duller red.
        assert _near(_pixel(path, 50, 75), (255, 0, 3)), path
        assert _near(_pixel(path, 150, 75), (3, 255, 0)), path
        assert "icc-profile-data" not in _open(path).get_fields()


def test_metadata_is_stripped_unless_kept(media: Path, tmp_path: Path) -> None:
    for name in ("photo_exif_rotated.jpg", "icc_profile.jpg"):
        assert {"exif-data", "icc-profile-data"} & set(_open(media / name).get_fields())
        result = render(media / name, tmp_path / "strip")
        for path in _by_ext(result).values():
            assert not set(METADATA_FIELDS) & set(_open(path).get_fields()), path
    result = render(media / "icc_profile.jpg", tmp_path / "keep", keep=["icc"])
    for path in _by_ext(result).values():
        fields = set(_open(path).get_fields())
        assert "icc-profile-data" in fields, path
        assert not {"exif-data", "xmp-data", "iptc-data"} & fields, path
        # The kept profile is the sRGB one the pixels were converted to, not the P3 one.
        assert "sRGB".encode("utf-16-be") in bytes(_open(path).get("icc-profile-data"))
        assert _near(_pixel(path, 50, 75), (255, 0, 3)), path


def test_srgb_tagged_input_skips_the_transform_and_keeps_its_colours(
    media: Path, tmp_path: Path
) -> None:
    # An sRGB-to-sRGB transform is skipped as a costly no-op, recognised by the profile's
    # description; a Display P3 profile must not be mistaken for one.
    p3 = bytes(_open(media / "icc_profile.jpg").get("icc-profile-data"))
    tagged = _by_ext(render(media / "icc_profile.jpg", tmp_path / "a", keep="icc"))["jpg"]
    srgb = bytes(_open(tagged).get("icc-profile-data"))
    assert (_is_srgb(srgb), _is_srgb(p3), _is_srgb(b"not a profile")) == (True, False, False)
    for path in _by_ext(render(tagged, tmp_path / "b")).values():
        assert _near(_pixel(path, 50, 75), (255, 0, 3)), path


def test_alpha_is_kept_in_webp_and_avif_and_flattened_on_white_in_jpeg(
    media: Path, tmp_path: Path
) -> None:
    # alpha.png: transparent left half (storing magenta), opaque orange right half.
    paths = _by_ext(render(media / "alpha.png", tmp_path))
    for ext in ("webp", "avif"):
        assert _open(paths[ext]).bands == 4
        assert _pixel(paths[ext], 75, 100)[3] == 0
        assert _near(_pixel(paths[ext], 225, 100), (255, 128, 0, 255))
    assert _open(paths["jpg"]).bands == 3
    assert _near(_pixel(paths["jpg"], 75, 100), (255, 255, 255), 3)
    assert _near(_pixel(paths["jpg"], 225, 100), (255, 128, 0))


def test_resized_alpha_edges_carry_no_hidden_colour(media: Path, tmp_path: Path) -> None:
    # 128w is resized from the 256w rendition, whose transparent pixels hold black. Resized
    # without premultiplied alpha, that black leaks into the half-transparent edge pixels
    # (a dark halo on any background); premultiplied, every visible pixel stays orange.
    result = render(media / "alpha.png", tmp_path, widths=[256, 128], formats=["webp"])
    edge = next(r["path"] for r in result["renditions"] if r["width"] == 128)
    visible = [p for p in (_pixel(edge, x, 42) for x in range(56, 72)) if p[3] >= 8]
    assert len(visible) > 8
    for r, g, b, a in visible:
        assert r >= 224 and 96 <= g <= 160 and b <= 48, (r, g, b, a)


def test_palette_with_transparency(media: Path, tmp_path: Path) -> None:
    paths = _by_ext(render(media / "palette_alpha.png", tmp_path))
    for ext in ("webp", "avif"):
        assert _pixel(paths[ext], 20, 40)[3] == 0
        assert _near(_pixel(paths[ext], 60, 40), (255, 0, 0, 255))
        assert _near(_pixel(paths[ext], 100, 40), (0, 0, 255, 128))
    assert _near(_pixel(paths["jpg"], 20, 40), (255, 255, 255), 3)
    assert _near(_pixel(paths["jpg"], 60, 40), (255, 0, 0))
    assert _near(_pixel(paths["jpg"], 100, 40), (128, 128, 255))  # half blue on white


def test_sixteen_bit_is_scaled_to_eight_bits_not_clipped(media: Path, tmp_path: Path) -> None:
    paths = _by_ext(render(media / "sixteen_bit.png", tmp_path))
    for path in paths.values():
        assert (_open(path).format, _open(path).bands) == ("uchar", 3)
        # Blue is 0x1234 = 18 in 8 bits; the ramps reach mid-grey in the middle, where a
        # cast without scaling would give 255 and a byte swap noise.
        assert _near(_pixel(path, 0, 0), (0, 0, 18)), path
        assert _near(_pixel(path, 159, 119), (255, 255, 18)), path
        assert _near(_pixel(path, 80, 60), (128, 129, 18)), path


def test_animated_gif_gives_its_first_frame_by_default(media: Path, tmp_path: Path) -> None:
    result = render(media / "animated.gif", tmp_path)
    assert result["source"] == {"width": 100, "height": 80}
    for r in result["renditions"]:
        assert (r["width"], r["height"]) == (100, 80)
        assert "frames" not in r
        if r["format"] != "jpeg":  # JPEG has no pages; WebP and AVIF could
            assert _open(r["path"], n=-1).height == 80  # one page only
        assert _near(_pixel(r["path"], 50, 40)[:3], (255, 0, 0)), r["path"]


def test_animated_webp_when_asked_keeps_every_frame_and_its_timing(
    media: Path, tmp_path: Path
) -> None:
    result = render(media / "animated.gif", tmp_path, widths=[100, 50], animated=True)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for r in result["renditions"]:
        w, h = r["width"], r["height"]
        assert (w, h) in {(100, 80), (50, 40)}
        if r["format"] != "webp":  # AVIF and JPEG: the first frame
            assert "frames" not in r
            assert _near(_pixel(r["path"], w // 2, h // 2)[:3], colours[0])
            continue
        strip = _open(r["path"], n=-1)
        # 50w is resized frame by frame from the 100w strip: every frame keeps its colour.
        assert r["frames"] == 4 and strip.get("n-pages") == 4
        assert (strip.get("page-height"), strip.height) == (h, 4 * h)
        assert strip.get("delay") == [200] * 4 and strip.get("loop") == 0
        for i, colour in enumerate(colours):
            assert _near([round(v) for v in strip(w // 2, i * h + h // 2)][:3], colour)


@pytest.mark.parametrize(("width", "height"), [(333, 201), (257, 1), (1, 3)])
def test_recorded_facts_are_those_of_the_files_on_disk(
    tmp_path: Path, width: int, height: int
) -> None:
    # Encoded in memory and written from there: bytes and hash are of what reached the
    # disk, and the size (the encoded image's, not read back) is what a decoder finds.
    src = tmp_path / "odd.png"
    pyvips.Image.black(width, height, bands=3).draw_rect(
        [200, 40, 90], 0, 0, max(1, width // 2), height, fill=True
    ).pngsave(str(src))
    widths = sorted({width, max(1, width // 2), max(1, width // 3)}, reverse=True)
    result = render(src, tmp_path / "out", widths=widths)
    assert len(result["renditions"]) == 3 * len(widths)
    for r in result["renditions"]:
        path = Path(r["path"])
        data = path.read_bytes()
        assert r["bytes"] == len(data) == path.stat().st_size
        assert r["sha256"] == hashlib.sha256(data).hexdigest()
        img = _open(path)
        assert (r["width"], r["height"]) == (img.width, img.height), r["path"]
    assert _listing(tmp_path / "out") == sorted(Path(r["path"]).name for r in result["renditions"])


def test_recorded_facts_of_an_animated_webp_are_those_on_disk(media: Path, tmp_path: Path) -> None:
    result = render(media / "animated.gif", tmp_path, widths=[100, 37], animated=True)
    for r in result["renditions"]:
        data = Path(r["path"]).read_bytes()
        assert (r["bytes"], r["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        frame = _open(r["path"])  # one page: the size of a frame
        assert (r["width"], r["height"]) == (frame.width, frame.height)
        assert r.get("frames", 1) == (4 if r["format"] == "webp" else 1)


def test_rerun_overwrites_atomically(media: Path, tmp_path: Path) -> None:
    src = media / "photo_exif_rotated.jpg"
    first = render(src, tmp_path, widths=[128])
    inodes = {r["path"]: os.stat(r["path"]).st_ino for r in first["renditions"]}
    second = render(src, tmp_path, widths=[128])
    assert [r["path"] for r in second["renditions"]] == list(inodes)
    # A new file renamed over the old one (a reader never sees a half-written file).
    assert all(os.stat(p).st_ino != ino for p, ino in inodes.items())
    assert [r["sha256"] for r in second["renditions"]] == [r["sha256"] for r in first["renditions"]]
    assert _listing(tmp_path) == sorted(Path(p).name for p in inodes)


def test_name_and_nested_out_dir(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    result = render(media / "cmyk.jpg", out, name="hero", formats=["jpg", "webp", "jpeg"])
    assert _listing(out) == ["hero_200w.jpg", "hero_200w.webp"]
    assert [r["format"] for r in result["renditions"]] == ["jpeg", "webp"]


def _bad_input(kind: str, media: Path, tmp: Path) -> Path:
    if kind == "not-an-image":
        return media / "not_an_image.jpg"  # text with a .jpg name
    if kind == "empty-fixture":
        return media / "empty.mp4"
    if kind == "missing":
        return tmp / "missing.jpg"
    src, dest, size = {
        "empty": (media / "large.jpg", tmp / "empty.jpg", 0),
        "jpeg-header-only": (media / "large.jpg", tmp / "head.jpg", 300),
        "truncated-jpeg": (media / "large.jpg", tmp / "half.jpg", None),
        "truncated-png": (media / "sixteen_bit.png", tmp / "half.png", None),
    }[kind]
    data = src.read_bytes()
    dest.write_bytes(data[: len(data) // 2 if size is None else size])
    return dest


@pytest.mark.parametrize(
    "kind",
    [
        "not-an-image",
        "empty-fixture",
        "empty",
        "missing",
        "jpeg-header-only",
        "truncated-jpeg",  # the header reads fine: the decode fails
        "truncated-png",  # libvips' default fail_on would fill the missing rows with black
    ],
)
def test_bad_input_fails_naming_the_file_and_leaves_no_output(
    kind: str, media: Path, tmp_path: Path
) -> None:
    src = _bad_input(kind, media, tmp_path)
    out = tmp_path / "out"
    with pytest.raises(BadInputError) as err:
        render(src, out)
    assert str(src) in str(err.value)
    if kind.startswith("truncated"):
        assert "cannot decode image" in str(err.value)
    assert _listing(out) == []


def test_pixel_limit_is_checked_before_decoding(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = media / "large.jpg"
    with pytest.raises(BadInputError, match=r"2400x1600 = 3840000 pixels .* 1000000") as err:
        render(src, tmp_path, max_pixels=1_000_000)
    assert str(src) in str(err.value)
    monkeypatch.setenv("MEDIAPIPE_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(BadInputError, match="limit of 1000 pixels"):
        render(src, tmp_path)
    monkeypatch.delenv("MEDIAPIPE_MAX_IMAGE_PIXELS")
    # A decompression bomb: the header declares 30000x30000 but no pixel data follows.
    # Had anything been decoded, the error would be about the missing data instead.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(30_000, 30_000))
    with pytest.raises(BadInputError, match="30000x30000 = 900000000 pixels exceeds"):
        render(bomb, tmp_path)
    # An animation is limited on all its frames (each is decoded), a still on one.
    gif = media / "animated.gif"
    render(gif, tmp_path / "still", max_pixels=10_000)
    with pytest.raises(BadInputError, match="4 frames of 100x80 = 32000 pixels"):
        render(gif, tmp_path / "anim", max_pixels=10_000, animated=True)
    assert _listing(tmp_path / "anim") == []
    assert _listing(tmp_path) == ["bomb.png", "still"]


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\0" * 64)  # far less than the header promises
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "params",
    [
        {"formats": ["gif"]},
        {"formats": []},
        {"widths": [0, 256]},
        {"widths": ["wide"]},
        {"keep": ["everything"]},
        {"fail_on": "sometimes"},
    ],
)
def test_invalid_params_are_bad_input(params: dict[str, Any], media: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="image_renditions"):
        render(media / "cmyk.jpg", tmp_path, **params)
    assert _listing(tmp_path) == []
