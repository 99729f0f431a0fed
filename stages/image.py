"""image_renditions: every width x format of an image from ONE decode.

libvips decodes the input once, with ``thumbnail`` at the largest width: that shrinks on
load (a JPEG is decoded at 1/2, 1/4 or 1/8 scale when the width allows), applies the EXIF
orientation and never upscales. The result is kept in memory and each smaller width is
resized from the previous one, largest first, so a rendition costs a resize of an image
already small instead of another decode (large.jpg, 4 widths as JPEG: 87 ms against 110 ms
for one ``thumbnail`` per width). Each width is then saved in every format; the encoders,
AVIF above all, cost far more than the decode.

Outputs are 8-bit sRGB: an embedded ICC profile (Display P3, Adobe RGB, CMYK) is applied,
untagged CMYK goes through libvips' built-in CMYK profile and 16-bit input is brought down
to 8 bits. WebP and AVIF keep alpha; JPEG has none, so transparency is flattened onto
white. Metadata is stripped unless ``keep`` names what to keep. An animation keeps its
first frame only, unless ``animated`` is set: then the WebP renditions are animated (AVIF
and JPEG still get the first frame).

The input is opened with the loader its magic bytes name, never another (stages/loaders.py):
an SVG or a libvips matrix file named ``.jpg`` is refused before any parser sees it, and
an Ultra HDR JPEG renders its primary image like any JPEG.

No Pillow fallback: the probe admits only images that libvips reads (``IMAGE_LOADERS``), so
a second decoder would only ever see files libvips has failed to decode, which are the
corrupt ones, and Pillow would render their missing part as grey instead of failing.
"""

from __future__ import annotations

import functools
import math
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pyvips

from pipeline.errors import BadInputError
from stages import loaders
from stages.contract import media_stage
from stages.limits import IMAGE_LOADERS, MediaLimits
from stages.media_facts import encoded_image_facts
from stages.output import OutputFolder, atomic_output, output_name
from stages.params import (
    MAX_DIMENSION,
    Rule,
    boolean,
    integer,
    list_of,
    one_of,
    param,
    table_of,
)

DEFAULT_WIDTHS = (2048, 1024, 512, 256)
DEFAULT_FORMATS = ("webp", "avif", "jpeg")
DEFAULT_QUALITY = {"webp": 80, "avif": 50, "jpeg": 85}
EXTENSIONS = {"webp": "webp", "avif": "avif", "jpeg": "jpg"}
# Metadata names for ``keep``, as libvips' VipsForeignKeep flags.
KEEP_FLAGS = {"none": 0, "exif": 1, "xmp": 2, "iptc": 4, "icc": 8, "other": 16, "all": 63}
# Loaders whose pages are frames of an animation (a multi-page TIFF or HEIF is not one).
ANIMATION_LOADERS = frozenset({"gifload", "gifload_source", "webpload", "webpload_source"})
# "error" rejects truncated and undecodable data; "warning" would also reject the many
# camera JPEGs with harmless libjpeg warnings (extraneous bytes before a marker).
FAIL_ON_LEVELS = ("none", "truncated", "error", "warning")
DEFAULT_FAIL_ON = "error"
# thumbnail() fits a box: a height this tall lets the width alone decide the size.
UNBOUNDED = 10_000_000
# A cost-1 job holds one core's slot in the worker pool: one libvips worker thread per
# job keeps N concurrent jobs on N cores instead of N x cores threads.
POOL_THREADS = 1
# Stage params passed on to render() (input and out_dir are positional).
RENDER_OPTIONS = (
    "widths", "formats", "quality", "effort", "animated", "keep", "max_pixels", "name",
    "fail_on",
)  # fmt: skip

ProgressFn = Callable[..., Any]


def _keep_names(v: Any) -> None:
    names = v.split(",") if isinstance(v, str) else v
    if not isinstance(names, list | tuple) or any(
        str(n).strip().lower() not in KEEP_FLAGS for n in names
    ):
        raise ValueError(KEEP_NAMES.expects)


KEEP_NAMES = Rule(
    f"names among {', '.join(KEEP_FLAGS)} (a list or a comma-separated string)", _keep_names
)
EFFORT = {"webp": (0, 6), "avif": (0, 9)}  # libvips' ranges; jpegsave has no effort


@dataclass(frozen=True)
class ImageParams:
    widths: tuple[int, ...] = param(
        DEFAULT_WIDTHS,
        list_of(integer(1, MAX_DIMENSION)),
        "rendition widths; those wider than the image are dropped",
    )
    formats: tuple[str, ...] = param(
        DEFAULT_FORMATS,
        list_of(one_of(*EXTENSIONS, "jpg"), max_len=4),
        "every width is saved in each",
    )
    # Looked up by the canonical format name: a "jpg" key would be ignored, so refused.
    quality: Mapping[str, int] | None = param(
        None,
        table_of(dict.fromkeys(EXTENSIONS, integer(1, 100))),
        f"Q per format, over {DEFAULT_QUALITY}",
    )
    effort: Mapping[str, int] | None = param(
        None, table_of({f: integer(*r) for f, r in EFFORT.items()}), "encoder effort per format"
    )
    animated: bool = param(False, boolean, "animated WebP renditions of an animation")
    keep: str | None = param(None, KEEP_NAMES, "metadata to keep (default none)")
    max_pixels: int | None = param(None, integer(1, 1 << 40), "default MEDIAPIPE_MAX_IMAGE_PIXELS")
    fail_on: str = param(DEFAULT_FAIL_ON, one_of(*FAIL_ON_LEVELS), "libvips' fail_on")


# Prefers a worker with nvJPEG: there a batch lane renders it (stages/gpu_images.py); with
# no such worker alive it waits in the plain queue for any worker.
@media_stage(
    "image_renditions",
    params=ImageParams,
    needs=("probe",),
    outputs=("renditions",),
    kinds=("image",),
    essential=True,
    timeout=600,
    prefers=("nvjpeg",),
)
def image_renditions(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    # inputs["probe"] is not relied on: render() reads the header and enforces the pixel
    # limit itself, so a DAG without a probe (or a lying one) cannot bypass them.
    configure_vips_for_pool()
    return render(
        params["input"], params["out_dir"], progress=ctx.progress, **render_options(params)
    )


def render_options(params: dict[str, Any]) -> dict[str, Any]:
    """The job params that are render()'s keyword options."""
    return {k: params[k] for k in RENDER_OPTIONS if k in params}


@functools.cache
def configure_vips_for_pool() -> None:
    """Once per process: no operation cache, and libvips threads sized to the job's slot.

    The cache only helps a process that reopens the same file; a worker child renders
    each input once, and without the cache RSS was lower at the same speed. The cache is
    also keyed on the file name, so a file replaced in place could be served stale.
    ``VIPS_CONCURRENCY``, when set, is honoured: libvips reads it itself at start-up.
    """
    pyvips.cache_set_max(0)
    if not os.environ.get("VIPS_CONCURRENCY"):
        pyvips.concurrency_set(POOL_THREADS)


@dataclass(frozen=True)
class RenditionPlan:
    """What ``render``'s options ask for, checked: the one spelling of the renditions of
    an image (widths, formats, encoder settings, file names), for the CPU stage and the
    GPU lane alike. Bad options raise BadInputError when the plan is made."""

    widths: tuple[int, ...]  # distinct, largest first
    formats: tuple[str, ...]  # canonical names (jpeg, not jpg), no repeats
    quality: Mapping[str, int]  # every format's Q
    effort: Mapping[str, int]  # only the formats given one
    keep: int  # libvips' VipsForeignKeep flags
    animated: bool
    fail_on: str
    max_pixels: int
    name: str | None = None

    @classmethod
    def of(
        cls,
        *,
        widths: Iterable[int] = DEFAULT_WIDTHS,
        formats: Iterable[str] = DEFAULT_FORMATS,
        quality: dict[str, int] | None = None,
        effort: dict[str, int] | None = None,
        animated: bool = False,
        keep: str | Iterable[str] | None = None,
        max_pixels: int | None = None,
        name: str | None = None,
        fail_on: str = DEFAULT_FAIL_ON,
    ) -> RenditionPlan:
        wanted = _widths(widths)
        fmts = _formats(formats)
        keep_flags = _keep_flags(keep)
        if fail_on not in FAIL_ON_LEVELS:
            raise BadInputError(f"image_renditions: fail_on must be one of {FAIL_ON_LEVELS}")
        limit = MediaLimits.from_env().max_image_pixels if max_pixels is None else int(max_pixels)
        return cls(
            tuple(wanted),
            tuple(fmts),
            {**DEFAULT_QUALITY, **(quality or {})},
            dict(effort or {}),
            keep_flags,
            bool(animated),
            fail_on,
            limit,
            name,
        )

    def header(self, src: Path) -> Header:
        """The input's header, checked against the loader allow-list and the pixel limit."""
        return _read_header(src, self.animated, self.max_pixels)

    def widths_for(self, source_width: int) -> list[int]:
        """The widths to make of an image this wide: never upscaled; when every width is
        too wide, one rendition at the image's own width."""
        return [w for w in self.widths if w <= source_width] or [source_width]

    @staticmethod
    def height_at(width: int, source_width: int, source_height: int) -> int:
        """A rendition's height: the source's, scaled by width, rounded half up, at least
        1. From the source's size, never a smaller rendition's rounded one."""
        return max(1, math.floor(source_height * width / source_width + 0.5))

    def path(self, out_dir: str | os.PathLike[str], src: Path, width: int, fmt: str) -> Path:
        """``{name}_{width}w.{ext}`` in ``out_dir``, the name made a plain file name."""
        return self.paths(out_dir, src)(width, fmt)

    def paths(self, out_dir: str | os.PathLike[str], src: Path) -> Callable[[int, str], Path]:
        """``path`` for every rendition of one image: the name is made and ``out_dir``
        resolved once (``OutputFolder``), not once per output."""
        stem = output_name(self.name or src.stem)
        folder = OutputFolder(out_dir)
        return lambda width, fmt: folder.path(f"{stem}_{width}w.{EXTENSIONS[fmt]}")

    def encode(self, image: Any, fmt: str, frames: int = 1) -> Encoded:
        """``image`` encoded as ``fmt`` with the plan's quality, effort and metadata."""
        return _encode(image, fmt, frames, self.quality[fmt], self.effort.get(fmt), self.keep)

    def save(self, image: Any, path: Path, fmt: str, frames: int = 1) -> None:
        """Encode ``image`` as ``fmt`` into the file ``path``."""
        Path(path).write_bytes(self.encode(image, fmt, frames).data)

    def write(self, image: Any, final: Path, fmt: str, frames: int = 1) -> dict[str, Any]:
        """Encode ``image`` as ``fmt`` and write it to ``final`` (under a temporary name,
        renamed when complete); return its facts. Encoded in memory first: the hash and
        byte count are of the bytes written, and the size is the encoded image's, so
        nothing is read back from the file (that cost ~0.4 ms per output, and an AVIF's
        size needed libvips to open it again)."""
        encoded = self.encode(image, fmt, frames)
        with atomic_output(final) as tmp:
            tmp.write_bytes(encoded.data)
        extra = {"frames": frames} if frames > 1 else {}
        return encoded_image_facts(final, encoded.data, fmt, encoded.width, encoded.height, **extra)


class Encoded(NamedTuple):
    """An encoded rendition: the file's bytes and the size of the image they hold (of one
    frame, for an animation)."""

    data: bytes
    width: int
    height: int


@dataclass(frozen=True)
class Header:
    """What the header says, before any pixel is decoded."""

    width: int  # as displayed (after the EXIF orientation)
    height: int  # of one frame, as displayed
    pages: int  # frames to decode: 1 unless an animation is kept
    convert_profile: bool  # has an embedded ICC profile that is not sRGB
    loader: str  # the libvips loader the magic bytes chose (jpegload_source...)


def render(
    input: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    widths: Iterable[int] = DEFAULT_WIDTHS,
    formats: Iterable[str] = DEFAULT_FORMATS,
    quality: dict[str, int] | None = None,
    effort: dict[str, int] | None = None,
    animated: bool = False,
    keep: str | Iterable[str] | None = None,
    max_pixels: int | None = None,
    name: str | None = None,
    fail_on: str = DEFAULT_FAIL_ON,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Write ``{name}_{width}w.{ext}`` for each width and format; return their facts.

    Usable without a job context. Widths wider than the image are dropped (never
    upscale); when all of them are, one rendition is made at the image's own width.
    ``quality`` and ``effort`` map a format to libvips' ``Q`` and ``effort`` for it.
    ``keep`` names metadata to keep ("icc", "exif", "xmp", "iptc", "other", "all").
    """
    src = Path(input)
    plan = RenditionPlan.of(
        widths=widths,
        formats=formats,
        quality=quality,
        effort=effort,
        animated=animated,
        keep=keep,
        max_pixels=max_pixels,
        name=name,
        fail_on=fail_on,
    )
    header = plan.header(src)
    widths_made = plan.widths_for(header.width)
    image = _decode(src, header, widths_made[0], plan.fail_on)

    total = len(widths_made) * len(plan.formats)
    path = plan.paths(out_dir, src)
    renditions: list[dict[str, Any]] = []
    for width in widths_made:
        if image.width != width:
            # Heights from the source's aspect ratio, not the previous rendition's
            # rounded one, so rounding errors do not add up down the cascade.
            image = _resize(image, width, plan.height_at(width, header.width, header.height))
        for fmt in plan.formats:
            frames = header.pages if fmt == "webp" else 1
            renditions.append(plan.write(image, path(width, fmt), fmt, frames))
            if progress is not None:
                done = len(renditions)
                progress(100 * done / total, "renditions", done=done, total=total)
    return {"renditions": renditions, "source": {"width": header.width, "height": header.height}}


def _widths(widths: Iterable[int]) -> list[int]:
    """Distinct widths, largest first."""
    try:
        wanted = sorted({int(w) for w in widths}, reverse=True)
    except (TypeError, ValueError):
        raise BadInputError(f"image_renditions: widths must be integers, not {widths!r}") from None
    if not wanted or wanted[-1] < 1:
        raise BadInputError(f"image_renditions: widths must be positive, not {wanted!r}")
    return wanted


def _formats(formats: Iterable[str]) -> list[str]:
    names = [formats] if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for f in names:
        fmt = "jpeg" if str(f).lower() == "jpg" else str(f).lower()
        if fmt not in EXTENSIONS:
            raise BadInputError(f"image_renditions: unknown format {f!r} (webp, avif, jpeg)")
        if fmt not in out:
            out.append(fmt)
    if not out:
        raise BadInputError("image_renditions: no formats given")
    return out


def _keep_flags(keep: str | Iterable[str] | None) -> int:
    """``keep`` as libvips flags, from None, "icc", "icc,exif" or ["icc", "exif"]."""
    if keep is None:
        return 0
    names = keep.split(",") if isinstance(keep, str) else list(keep)
    flags = 0
    for n in names:
        key = str(n).strip().lower()
        if key not in KEEP_FLAGS:
            raise BadInputError(
                f"image_renditions: unknown keep value {n!r} ({', '.join(KEEP_FLAGS)})"
            )
        flags |= KEEP_FLAGS[key]
    return flags


def _read_header(src: Path, animated: bool, limit: int) -> Header:
    """Open the header only and check the loader and the pixel limit: nothing decoded yet."""
    if not src.is_file():
        raise BadInputError(f"{src}: no such file")
    if src.stat().st_size == 0:
        raise BadInputError(f"{src}: empty file (0 bytes)")
    loader = loaders.sniff_file(src)
    if loader is None:
        formats = ", ".join(loaders.LOADERS)
        raise BadInputError(f"{src}: not an image (its content is none of {formats})")
    header = loaders.open_image(src, loader, access="sequential")
    if str(header.get("vips-loader")) not in IMAGE_LOADERS:  # the blocks make this unreachable
        raise BadInputError(f"{src}: unsupported image format ({header.get('vips-loader')})")
    fields = set(header.get_fields())
    # Opened without n=-1, a multi-page image shows its first page: height is one frame.
    width, height = int(header.width), int(header.height)
    pages = int(header.get("n-pages")) if "n-pages" in fields else 1
    pages = pages if animated and loader in ANIMATION_LOADERS else 1
    pixels = width * height * pages  # an animation decodes every frame
    if pixels > limit:
        what = f"{pages} frames of {width}x{height}" if pages > 1 else f"{width}x{height}"
        raise BadInputError(
            f"{src}: image of {what} = {pixels} pixels exceeds the limit of {limit} pixels"
        )
    loaders.check_decodable(src, loader, header)
    orientation = int(header.get("orientation")) if "orientation" in fields else 1
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    icc = bytes(header.get("icc-profile-data")) if "icc-profile-data" in fields else None
    return Header(width, height, pages, icc is not None and not _is_srgb(icc), loader)


def _decode(src: Path, header: Header, width: int, fail_on: str) -> Any:
    """Decode once at ``width``: 8-bit sRGB, upright, in memory. Bad data: BadInputError."""
    # fail_on goes to the loader in the option string: thumbnail_source() takes a fail_on
    # keyword but does not pass it on (libvips 8.18), and a truncated PNG or JPEG then
    # "decodes" with its missing rows black or grey. n=-1 loads every frame.
    load = [f"fail_on={fail_on}"] + (["n=-1"] if header.pages > 1 else [])
    options: dict[str, Any] = {"height": UNBOUNDED, "size": "down"}
    if header.convert_profile:
        # Only for a profile that is not sRGB: an sRGB-to-sRGB transform changes nothing
        # and costs far more than the decode (~470 ms at 2048x1365, against 34 ms).
        options["output_profile"] = "srgb"
    loaders.clear_errors()
    try:
        # thumbnail_source() picks its loader itself (it has to, to shrink on load); only
        # the allowed loaders are unblocked, and the one it used is checked below.
        image = pyvips.Image.thumbnail_source(
            loaders.source(src), width, option_string=",".join(load), **options
        )
        used = str(image.get("vips-loader"))
        if used != header.loader:
            raise BadInputError(f"{src}: changed while it was read ({header.loader}, then {used})")
        # libvips is lazy: the pixels are decoded here, so bad data fails here, before
        # any output exists, and every later step reads this copy instead of the file.
        return _to_srgb8(image).copy_memory()
    except pyvips.Error as exc:
        raise BadInputError(f"{src}: cannot decode image ({loaders.reason(exc, src)})") from None


def _to_srgb8(image: Any) -> Any:
    # thumbnail already turns CMYK and 16-bit input into 8-bit sRGB; this covers what it
    # leaves (greyscale) so that every encoder gets the same kind of image.
    if image.interpretation != "srgb":
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar", shift=image.format in ("ushort", "short"))
    return image


def _resize(image: Any, width: int, frame_height: int) -> Any:
    """``image`` (one frame, or a strip of frames) at ``width`` x ``frame_height``."""
    page = _page_height(image)
    if page == image.height:
        return _resize_frame(image, width, frame_height).copy_memory()
    # Resized as a whole, the strip would blend each frame into the next at the seams.
    frames = [
        _resize_frame(image.crop(0, top, image.width, page), width, frame_height)
        for top in range(0, image.height, page)
    ]
    strip = pyvips.Image.arrayjoin(frames, across=1).copy_memory()
    strip.set("page-height", frame_height)
    return strip


def _resize_frame(image: Any, width: int, height: int) -> Any:
    hscale, vscale = width / image.width, height / image.height
    if not image.hasalpha():
        return image.resize(hscale, vscale=vscale)
    # resize() does not premultiply (thumbnail does): without it the colour hidden under
    # transparent pixels bleeds into the edge of opaque ones (a magenta fringe on alpha.png).
    return image.premultiply().resize(hscale, vscale=vscale).unpremultiply().cast("uchar")


def _page_height(image: Any) -> int:
    """The height of one frame: ``page-height`` when set, else the image's height.
    ``get_typeof`` asks for that one field (3 us); ``get_fields`` lists them all (26 us)."""
    return int(image.get("page-height")) if image.get_typeof("page-height") else image.height


def _encode(image: Any, fmt: str, frames: int, q: int, effort: int | None, keep: int) -> Encoded:
    page = _page_height(image)
    if frames == 1 and page != image.height:
        image = image.crop(0, 0, image.width, page)
    options: dict[str, Any] = {"Q": int(q), "keep": keep}
    if effort is not None and fmt != "jpeg":  # jpegsave has no effort
        options["effort"] = int(effort)
    if fmt == "webp":
        # A strip with page-height, delay and loop set saves as an animated WebP.
        data = image.webpsave_buffer(**options)
    elif fmt == "avif":
        data = image.heifsave_buffer(compression="av1", **options)
    else:
        if image.hasalpha():
            image = image.flatten(background=[255, 255, 255])
        data = image.jpegsave_buffer(optimize_coding=True, **options)
    return Encoded(data, image.width, page)


def _is_srgb(icc: bytes) -> bool:
    """Whether an ICC profile describes itself as sRGB (its ``desc`` tag names sRGB).

    This only decides whether to skip a costly no-op transform: a malformed profile
    counts as not sRGB, and libvips then applies it or rejects the file.
    """
    try:
        (count,) = struct.unpack_from(">I", icc, 128)
        for i in range(min(count, 256)):
            sig, offset, size = struct.unpack_from(">4sII", icc, 132 + 12 * i)
            if sig == b"desc":
                desc = icc[offset : offset + size]
                # ICC v2 stores the text as ASCII ("desc" type), v4 as UTF-16BE ("mluc").
                return b"sRGB" in desc or "sRGB".encode("utf-16-be") in desc
    except struct.error:
        pass
    return False
