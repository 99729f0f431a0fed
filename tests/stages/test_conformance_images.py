"""Image conformance: real-world kinds of image files, made here at test time, go through the
probe and the image stage upright and in the right colours, or fail in one line that names
the file once and gives the library's own reason.

Every file is tiny and built with libvips, except fixtures/conformance/hevc.heic (nothing
installed here can encode HEVC; fixtures/conformance/make_hevc.py made it). Colours are
read back from the written renditions at the displayed position of each quadrant.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pyvips
from PIL import Image, ImageOps

from pipeline.errors import BadInputError
from stages.image import render
from stages.probe import probe

CONFORMANCE = Path(__file__).resolve().parents[2] / "fixtures" / "conformance"
RED, GREEN, BLUE, YELLOW = (220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 220, 30)
QUADRANTS = (RED, GREEN, BLUE, YELLOW)  # top-left, top-right, bottom-left, bottom-right
TOL = 24  # JPEG's chroma subsampling at quadrant edges; a wrong conversion is off by 100+


def _solid(width: int, height: int, colour: tuple[int, ...]) -> Any:
    return (pyvips.Image.black(width, height, bands=len(colour)) + list(colour)).cast("uchar")


def _quadrants(width: int = 64, height: int = 40) -> Any:
    """As displayed: red, green on top; blue, yellow below. Wider than tall."""
    w, h = width // 2, height // 2
    top = _solid(w, h, RED).join(_solid(w, h, GREEN), "horizontal")
    bottom = _solid(w, h, BLUE).join(_solid(w, h, YELLOW), "horizontal")
    return top.join(bottom, "vertical")


def _centres(width: int, height: int) -> list[tuple[int, int]]:
    return [(x, y) for y in (height // 4, 3 * height // 4) for x in (width // 4, 3 * width // 4)]


def _near(got: list[float], want: tuple[int, ...], tol: int = TOL) -> bool:
    return all(abs(g - w) <= tol for g, w in zip(got, want, strict=True))


# -- makers: one file each, in the folder given -----------------------------------------------
def _mpf(primary: bytes, secondary: bytes, mp_type: int) -> bytes:
    """``primary`` with a second JPEG appended and an APP2 MPF index pointing at it: the
    structure of an MPO (stereo) and of a gain-map JPEG. Offsets count from the MPF header."""
    entries_at = 8 + 2 + 3 * 12 + 4
    ifd = struct.pack(">H", 3)
    ifd += struct.pack(">HHI4s", 0xB000, 7, 4, b"0100")  # MPFVersion
    ifd += struct.pack(">HHII", 0xB001, 4, 1, 2)  # NumberOfImages
    ifd += struct.pack(">HHII", 0xB002, 7, 32, entries_at)  # MPEntry
    ifd += struct.pack(">I", 0)
    after_app0 = 4 + struct.unpack(">H", primary[4:6])[0] if primary[2:4] == b"\xff\xe0" else 2
    segment_size = 2 + 2 + 4 + 8 + len(ifd) + 32
    header_at = after_app0 + 2 + 2 + 4
    first_size = len(primary) + segment_size
    entries = struct.pack(">IIIHH", 0x20000000 | mp_type, first_size, 0, 0, 0)
    entries += struct.pack(">IIIHH", mp_type, len(secondary), first_size - header_at, 0, 0)
    payload = b"MPF\x00" + b"MM\x00*" + struct.pack(">I", 8) + ifd + entries
    segment = b"\xff\xe2" + struct.pack(">H", 2 + len(payload)) + payload
    return primary[:after_app0] + segment + primary[after_app0:] + secondary


def make_ultra_hdr(d: Path) -> Path:
    """A real Ultra HDR JPEG (libultrahdr through uhdrsave): SDR primary + MPF gain map."""
    hdr = (_quadrants().colourspace("scrgb") * 2.0).copy(interpretation="scrgb")
    hdr.uhdrsave(str(d / "ultra_hdr.jpg"), Q=90)
    return d / "ultra_hdr.jpg"


def make_gain_map_mpf(d: Path) -> Path:
    primary = bytes(_quadrants().jpegsave_buffer(Q=90))
    gain_map = bytes(_solid(32, 20, (128,)).jpegsave_buffer(Q=90))
    (d / "gain_map.jpg").write_bytes(_mpf(primary, gain_map, 0x000000))
    return d / "gain_map.jpg"


def make_mpo(d: Path) -> Path:
    """A stereo pair (MP type 0x020002): the left view is the image."""
    left = bytes(_quadrants().jpegsave_buffer(Q=90))
    right = bytes(_solid(64, 40, (128, 0, 128)).jpegsave_buffer(Q=90))
    (d / "stereo.mpo").write_bytes(_mpf(left, right, 0x020002))
    return d / "stereo.mpo"


# Candidate stored forms of the displayed image; the one Pillow turns upright is kept.
_STORED: dict[str, Callable[[Any], Any]] = {
    "as is": lambda i: i,
    "mirrored": lambda i: i.fliphor(),
    "rot180": lambda i: i.rot180(),
    "flipped": lambda i: i.flipver(),
    "rot90": lambda i: i.rot90(),
    "rot270": lambda i: i.rot270(),
    "rot90 mirrored": lambda i: i.rot90().fliphor(),
    "rot270 mirrored": lambda i: i.rot270().fliphor(),
}


def make_orientation(d: Path, n: int) -> Path:
    """A JPEG with EXIF Orientation ``n`` whose displayed image is ``_quadrants()``: the
    stored pixels are the transform Pillow's exif_transpose (an independent reader) undoes."""
    path = d / f"orientation_{n}.jpg"
    for transform in _STORED.values():
        stored = transform(_quadrants()).copy()
        stored.set_type(pyvips.GValue.gint_type, "orientation", n)
        stored.jpegsave(str(path), Q=95)
        upright = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        if upright.size == (64, 40) and all(
            _near(list(upright.getpixel(c)), q)
            for c, q in zip(_centres(64, 40), QUADRANTS, strict=True)
        ):
            return path
    raise AssertionError(f"no stored form displays upright with orientation {n}")


def make_png16_trns(d: Path) -> Path:
    """16-bit RGB PNG with a tRNS colour key: the left half is the key (transparent), the
    right half opaque orange. Written by hand: libvips never writes tRNS."""
    width, height, key = 40, 20, (0x1234, 0x5678, 0x9ABC)
    row = b"\x00" + struct.pack(">3H", *key) * 20 + struct.pack(">3H", 65535, 32768, 0) * 20
    data = zlib.compress(row * height)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16-bit RGB
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    png += chunk(b"tRNS", struct.pack(">3H", *key)) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    (d / "png16_trns.png").write_bytes(png)
    return d / "png16_trns.png"


def make_animated_webp(d: Path) -> Path:
    frames = [_quadrants(), _solid(64, 40, GREEN), _solid(64, 40, BLUE)]
    strip = pyvips.Image.arrayjoin(frames, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 40)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100, 100, 100])
    strip.set_type(pyvips.GValue.gint_type, "loop", 0)
    strip.webpsave(str(d / "animated.webp"), Q=95)
    return d / "animated.webp"


def make_multipage_tiff(d: Path) -> Path:
    pages = pyvips.Image.arrayjoin([_quadrants(), _solid(64, 40, BLUE)], across=1).copy()
    pages.set_type(pyvips.GValue.gint_type, "page-height", 40)
    pages.tiffsave(str(d / "pages.tif"), compression="lzw")
    return d / "pages.tif"


def make_tiled_tiff(d: Path) -> Path:
    _quadrants().tiffsave(
        str(d / "tiled.tif"), tile=True, tile_width=16, tile_height=16, compression="deflate"
    )
    return d / "tiled.tif"


def make_avif(d: Path) -> Path:
    _quadrants().heifsave(str(d / "image.avif"), compression="av1", Q=90, effort=0)
    return d / "image.avif"


def make_cmyk(d: Path) -> Path:
    """CMYK JPEG, untagged: libvips' built-in CMYK profile maps it back to the quadrants."""
    cmyk = _quadrants().icc_export(output_profile="cmyk")
    cmyk.jpegsave(str(d / "cmyk.jpg"), Q=95)
    return d / "cmyk.jpg"


GOOD: dict[str, Callable[[Path], Path]] = {
    "ultra-hdr-jpeg": make_ultra_hdr,
    "gain-map-mpf-jpeg": make_gain_map_mpf,
    "mpo-stereo": make_mpo,
    **{
        f"exif-orientation-{n}": (lambda d, n=n: make_orientation(d, n))  # type: ignore[misc]
        for n in range(1, 9)
    },
    "tiled-tiff": make_tiled_tiff,
    "multi-page-tiff": make_multipage_tiff,
    "animated-webp": make_animated_webp,
    "avif": make_avif,
    "cmyk-jpeg": make_cmyk,
}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conformance")


def _expected(kind: str, src: Path) -> list[tuple[int, ...]]:
    if kind == "ultra-hdr-jpeg":
        # The encoder tone-maps the SDR primary: expect what Pillow (which reads only the
        # primary image) shows there, not the colours the HDR image was made of.
        primary = Image.open(src).convert("RGB")
        return [tuple(primary.getpixel(c)) for c in _centres(64, 40)]
    if kind == "cmyk-jpeg":
        # Pure green is outside the CMYK gamut: expect the colours back through the profile.
        back = _quadrants().icc_export(output_profile="cmyk").icc_import(input_profile="cmyk")
        back = back.colourspace("srgb")
        return [tuple(round(v) for v in back(*c)) for c in _centres(64, 40)]
    return list(QUADRANTS)


@pytest.mark.parametrize("kind", list(GOOD))
def test_renders_upright_in_the_right_colours(kind: str, made: Path, tmp_path: Path) -> None:
    src = GOOD[kind](made)
    facts = probe(src)
    assert facts["kind"] == "image" and (facts["width"], facts["height"]) == (64, 40)
    result = render(src, tmp_path, widths=[32], formats=["jpeg"])
    [out] = result["renditions"]
    image = pyvips.Image.new_from_file(out["path"])
    assert (image.width, image.height) == (32, 20)
    for (x, y), want in zip(_centres(32, 20), _expected(kind, src), strict=True):
        got = image(x, y)
        assert _near(got, want), f"{kind}: pixel at {x},{y} is {got}, not {want}"


def test_sixteen_bit_png_with_a_colour_key_keeps_its_transparency(
    made: Path, tmp_path: Path
) -> None:
    src = make_png16_trns(made)
    assert probe(src)["bit_depth"] == 16
    result = render(src, tmp_path, widths=[40], formats=["webp", "jpeg"])
    webp, jpeg = (pyvips.Image.new_from_file(r["path"]) for r in result["renditions"])
    assert webp.bands == 4 and webp(5, 10)[3] == 0 and _near(webp(35, 10), (255, 128, 0, 255))
    assert _near(jpeg(5, 10), (255, 255, 255)) and _near(jpeg(35, 10), (255, 128, 0))


def test_animated_webp_input_gives_its_first_frame_or_every_frame(
    made: Path, tmp_path: Path
) -> None:
    src = make_animated_webp(made)
    assert probe(src)["pages"] == 3
    still = render(src, tmp_path / "still", widths=[32], formats=["webp"])["renditions"][0]
    assert "frames" not in still
    anim = render(src, tmp_path / "anim", widths=[32], formats=["webp"], animated=True)
    assert anim["renditions"][0]["frames"] == 3


def _corrupt_tiff(d: Path) -> Path:
    tiff = bytes(_quadrants().tiffsave_buffer(compression="lzw"))
    (d / "corrupt.tif").write_bytes(tiff[:8] + b"\xff" * (len(tiff) - 8))
    return d / "corrupt.tif"


def _truncated_tiff(d: Path) -> Path:
    tiff = bytes(_quadrants().tiffsave_buffer(compression="lzw"))
    (d / "cut.tif").write_bytes(tiff[: len(tiff) // 3])
    return d / "cut.tif"


def _frameless_gif(d: Path) -> Path:
    (d / "empty.gif").write_bytes(b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0) + b";")
    return d / "empty.gif"


def _broken_png(d: Path) -> Path:
    png = bytes(_quadrants().pngsave_buffer())
    (d / "broken.png").write_bytes(png[:40])
    return d / "broken.png"


def _corrupt_heic(d: Path) -> Path:
    (d / "corrupt.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\x01junk" * 40)
    return d / "corrupt.heic"


def _hevc_heic(d: Path) -> Path:
    return CONFORMANCE / "hevc.heic"


def _svg_named_jpg(d: Path) -> Path:
    (d / "drawing.jpg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>')
    return d / "drawing.jpg"


# What each bad file must say: a fragment of the library's own reason.
BAD: dict[str, tuple[Callable[[Path], Path], str]] = {
    "corrupt-tiff": (_corrupt_tiff, "corrupt TIFF image (tiff2vips:"),
    "truncated-tiff": (_truncated_tiff, "corrupt TIFF image (tiff2vips:"),
    "frameless-gif": (_frameless_gif, "corrupt GIF image (gifload_source: no frames in GIF)"),
    "broken-png": (_broken_png, "corrupt PNG image (not enough data)"),
    "corrupt-heic": (_corrupt_heic, "corrupt HEIF image (heif: Invalid input"),
    "hevc-heic": (_hevc_heic, "HEIF coded in HEVC"),
    "svg-named-jpg": (_svg_named_jpg, "unsupported or corrupt media (not an allowed"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_image_fails_in_one_line_with_the_library_reason(
    kind: str, made: Path, tmp_path: Path
) -> None:
    make, reason = BAD[kind]
    src = make(made)
    with pytest.raises(BadInputError) as err:
        probe(src)
    message = str(err.value)
    assert reason in message, message
    assert message.count(str(src)) == 1 and "\n" not in message, message
    # The image stage, given the file without a probe, refuses it the same way.
    with pytest.raises(BadInputError) as err:
        render(src, tmp_path, widths=[32], formats=["jpeg"])
    message = str(err.value)
    assert message.count(str(src)) == 1 and "\n" not in message, message
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_jpeg_names_the_file_once_with_libjpeg_reason(
    made: Path, tmp_path: Path
) -> None:
    jpeg = bytes(_quadrants(640, 400).jpegsave_buffer(Q=90))
    src = made / "half.jpg"
    src.write_bytes(jpeg[: len(jpeg) // 2])
    probe(src)  # the header is whole: only decoding finds the damage
    with pytest.raises(BadInputError) as err:
        render(src, tmp_path, widths=[32], formats=["jpeg"])
    message = str(err.value)
    assert message == f"{src}: cannot decode image (VipsJpeg: premature end of JPEG image)"
