"""Which libvips loader may parse an untrusted file: chosen from its first bytes, never
from its name, and never one outside the allow-list.

Left to itself, libvips offers every file to every loader it was built with and keeps the
first that recognises the content: an SVG named ``upload.jpg`` went to svgload (which
follows references to other files), a text file of numbers to matrixload. So, once per
process, on import:

- ``block_untrusted_set(True)``: the loaders libvips flags as unsafe on hostile input
  (svgload, vipsload, csvload, rawload...) cannot run at all;
- every other loader is blocked too, except the formats in ``IMAGE_LOADERS``: libvips
  8.18 does not flag matrixload, and a loader added by a future build must not be
  reachable before someone decides to allow it. uhdrload stays blocked on purpose: an
  Ultra HDR JPEG is a JPEG whose primary image jpegload renders like any other.

A file is then opened with the loader its magic bytes name (``sniff``), explicitly, so
the allow-list is applied before any parser runs rather than after the header is read.
libvips' warnings (libjpeg's "extraneous bytes", libtiff's unknown tags) go to the
``mediapipe.libvips`` logger at debug level: a failure is one line with its reason, and
``--debug`` shows the rest.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import pyvips

from pipeline.errors import BadInputError
from stages.limits import IMAGE_FORMATS

log = logging.getLogger("mediapipe.libvips")

LOADERS = IMAGE_FORMATS
FORMAT_OF = {loader: fmt for fmt, (loader, _) in LOADERS.items()}
# ISO BMFF brands of HEIF still images (HEVC, AV1 and the generic ones). An MP4 or MOV
# carries video brands (isom, mp42, qt) and goes to PyAV instead.
HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1",
     b"msf1", b"avif", b"avis"}
)  # fmt: skip
SNIFF_BYTES = 256  # enough for an ftyp box with a few dozen compatible brands
# libvips' words for "no decoder for this compression in this build" (libheif's message).
_NOT_BUILT_IN = "not been built in"


class _LibraryWarnings(logging.Filter):
    """libvips' GLib warnings, as pyvips logs them, re-logged at debug level on one line.
    The last one is kept: some loaders (libspng) give their reason only as a warning."""

    last = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = " | ".join(ln for ln in record.getMessage().splitlines() if ln.strip())
        log.debug("%s", text)
        self.last.text = text.removeprefix("VIPS: ")
        return False


def _lock_down() -> None:
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for _, cls in LOADERS.values():
        pyvips.operation_block_set(cls, False)
    vips_log = logging.getLogger("pyvips")
    vips_log.addFilter(_LibraryWarnings())
    # Below warnings, pyvips logs every operation call and libvips traces each step of
    # a thumbnail: lines by the dozen per image that would bury the warnings --debug is
    # meant to show.
    vips_log.setLevel(logging.WARNING)


_lock_down()


def sniff(head: bytes) -> str | None:
    """The loader (``jpegload_source``...) these first bytes of a file call for; None for
    anything that is not one of the allowed image formats."""
    if head[:3] == b"\xff\xd8\xff":
        fmt = "JPEG"
    elif head[:8] == b"\x89PNG\r\n\x1a\n":
        fmt = "PNG"
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        fmt = "GIF"
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        fmt = "WebP"
    elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # TIFF, BigTIFF
        fmt = "TIFF"
    elif _is_heif(head):
        fmt = "HEIF"
    else:
        return None
    return LOADERS[fmt][0]


def _is_heif(head: bytes) -> bool:
    if head[4:8] != b"ftyp" or len(head) < 16:
        return False
    size = min(int.from_bytes(head[:4], "big"), len(head))
    # The major brand, then the compatible brands after the minor version.
    brands = [head[8:12]] + [head[i : i + 4] for i in range(16, size - 3, 4)]
    return any(b in HEIF_BRANDS for b in brands)


def sniff_file(path: str | os.PathLike[str]) -> str | None:
    with open(path, "rb") as f:
        return sniff(f.read(SNIFF_BYTES))


def source(path: str | os.PathLike[str]) -> Any:
    # A Source, not a file name: libvips reads a trailing "[...]" of a file name as load
    # options, and thumbnail() fails on a name like "scan[1]". Measured: same speed.
    return pyvips.Source.new_from_file(str(path))


def open_image(path: Path, loader: str, **options: Any) -> Any:
    """The header of ``path`` through ``loader`` and no other; no pixel is decoded yet.
    A file the loader rejects is a BadInputError with libvips' reason."""
    clear_errors()
    try:
        return pyvips.Operation.call(loader, source(path), **options)
    except pyvips.Error as exc:
        why = reason(exc, path)
        raise BadInputError(f"{path}: corrupt {FORMAT_OF[loader]} image ({why})") from None


def check_decodable(path: Path, loader: str, header: Any) -> None:
    """A HEIF's header reads whatever codec it uses; the pixels need a decoder for it, which
    this libvips may lack (the pyvips-binary build decodes AV1 but not HEVC). Tried once per
    codec and process on the first file that uses it; a file that cannot be decoded here is
    rejected now, not admitted to fail later at render."""
    if loader != LOADERS["HEIF"][0]:
        return
    fields = header.get_fields()
    codec = str(header.get("heif-compression")) if "heif-compression" in fields else "unknown"
    known = _HEIF_DECODES.get(codec)
    if known is None:
        clear_errors()
        try:
            # The embedded thumbnail when there is one, else the image: one pixel read.
            pyvips.Operation.call(loader, source(path), thumbnail=True).crop(0, 0, 1, 1).avg()
        except pyvips.Error as exc:
            why = reason(exc, path)
            if _NOT_BUILT_IN not in why:
                raise BadInputError(f"{path}: corrupt HEIF image ({why})") from None
            known = False
        else:
            known = True
        _HEIF_DECODES[codec] = known
    if not known:
        raise BadInputError(
            f"{path}: unsupported image (HEIF coded in {codec.upper()}: this build of "
            "libvips has no decoder for it; convert it to JPEG or AVIF)"
        )


_HEIF_DECODES: dict[str, bool] = {}


def clear_errors() -> None:
    """libvips keeps every warning in its error buffer until the next error is read: cleared
    before an operation, the buffer then holds this file's reasons only."""
    pyvips.vips_lib.vips_error_clear()
    _LibraryWarnings.last.text = ""


# Lines of libvips' error detail that say nothing about the file: the operation that
# failed, a warning count, and the seeks a loader's format probing makes past the end.
_NOISE = ("unable to call", "read gave", "load error", "unable to open source", "bad seek to")


def reason(exc: Any, path: str | os.PathLike[str] | None = None) -> str:
    """The first line of libvips' detail that says what is wrong with the file (else the
    last warning it gave), without the file's name: the caller names the file once."""
    for line in str(getattr(exc, "detail", "") or "").splitlines():
        text = line.strip()
        if path is not None:
            text = text.replace(f"{path}: ", "").replace(str(path), "the file")
        if text and not any(noise in text for noise in _NOISE):
            return text
    last = getattr(_LibraryWarnings.last, "text", "")
    return str(last) if last else "libvips could not read it"
