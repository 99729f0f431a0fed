"""Image renditions on a GPU, in batches, for the inputs a GPU can render exactly.

A batch of JPEGs is decoded in one call (nvJPEG batched through
``torchvision.io.decode_jpeg(list, device="cuda")``), each width is resized from the full
decode with an antialiased bicubic filter, JPEG renditions are encoded on the GPU and the
resized pixels go to CPU threads for WebP and AVIF, saved exactly as the CPU stage saves
them. Widths, formats, encoder settings and file names come from the same
``stages.image.RenditionPlan`` as ``render``'s, so results have its shape, file names and
facts.

Only 8-bit, upright, sRGB (or untagged) three-band JPEGs take this path. Anything else
(CMYK, greyscale, a non-sRGB ICC profile, an EXIF rotation, 16-bit samples, kept metadata,
an animation, a cut-off file, a file nvJPEG refuses) is rendered by ``render`` in the same
process: the GPU would need a colour transform, a rotation or a metadata copy that it does
not do, and a fallback costs time where a wrong picture would cost a customer.

torch and torchvision are imported inside functions, so that this module imports (and
``gpu_ineligible`` works) on a box without them. They are imported through importlib:
mypy then types them as Any whether or not the ``gpu`` extra is installed, so the check
gives the same answer on every box.

The device is a parameter: the same code runs on PyTorch's CPU device, which is how the
tests check it on machines without a GPU.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from pipeline.registry import batched
from stages import loaders
from stages.contract import stage_info
from stages.image import (
    DEFAULT_FAIL_ON,
    RENDER_OPTIONS,
    RenditionPlan,
    configure_vips_for_pool,
    render,
    render_options,
)
from stages.media_facts import image_facts
from stages.output import atomic_output

log = logging.getLogger("mediapipe.gpu_images")

JPEG_LOADERS = frozenset({"jpegload", "jpegload_source"})
# Colour spaces whose three bands decode to the RGB that nvJPEG returns; the bit depth is
# checked on its own.
RGB_INTERPRETATIONS = frozenset({"srgb", "rgb", "rgb16"})
# Measured against libvips' default resize (lanczos3, through thumbnail and resize) on
# large.jpg and two perlin-noise textures at widths 2048..256, PSNR of the resized pixels
# before encoding: bicubic 53-61 dB on the smooth fixture and 41-46 dB on the textures,
# bilinear 50-60 dB and 32-38 dB. Each width is resized from the full decode, not from the
# previous width as the CPU stage does: on the GPU that costs little, and it was 0.3-1 dB
# closer to libvips on the textures than a cascade (whose rounding adds up).
RESIZE_MODE = "bicubic"


@dataclass(frozen=True)
class RenderRequest:
    """One input of a batch: ``render(input, out_dir, **options)`` as the CPU stage gets it."""

    input: str | os.PathLike[str]
    out_dir: str | os.PathLike[str]
    options: dict[str, Any] = field(default_factory=dict)


@functools.cache
def torch_available() -> bool:
    """Whether torch and torchvision's image codecs import here (on any device)."""
    try:
        _torch_modules()
    except (ImportError, OSError, RuntimeError, AttributeError):
        # A torchvision built for another torch fails in its C extension with OSError or
        # RuntimeError rather than ImportError.
        return False
    return True


def gpu_ineligible(src: Path, options: dict[str, Any]) -> str | None:
    """None when the GPU path renders ``src`` exactly as ``render`` would, else why not.

    Reads the header only. Bad options, a missing, unreadable or unsupported file and an
    image over the pixel limit raise the BadInputError that ``render`` raises: those are
    errors, not reasons to fall back. Every reason that applies is listed, joined by "; ".
    """
    return _eligibility(Path(src), options)[1]


def _eligibility(src: Path, options: dict[str, Any]) -> tuple[RenditionPlan, str | None]:
    """The plan ``render`` makes of ``options`` and why the GPU cannot follow it (None:
    it can); see ``gpu_ineligible``."""
    reasons: list[str] = []
    unknown = sorted(set(options) - set(RENDER_OPTIONS))
    if unknown:
        reasons.append(f"unknown options {unknown}")  # render() rejects them itself
    # The plan render() makes, so the same errors come out, in the same order.
    plan = RenditionPlan.of(**{k: v for k, v in options.items() if k in RENDER_OPTIONS})
    if plan.keep:
        reasons.append("keep metadata requested")
    if plan.fail_on != DEFAULT_FAIL_ON:
        # nvJPEG has no notion of libjpeg's warning levels, so only the default, which
        # rejects cut-off files (checked before decoding), can be matched.
        reasons.append(f"fail_on={plan.fail_on}")
    header = plan.header(src)

    import pyvips

    try:
        image = pyvips.Image.new_from_source(loaders.source(src), "", access="sequential")
    except pyvips.Error:
        # plan.header just opened it: the file changed under us. render() decides.
        return plan, "header unreadable on the second open"
    loader = str(image.get("vips-loader"))
    if loader not in JPEG_LOADERS:
        reasons.append(f"not a JPEG ({loader})")
    interpretation = str(image.interpretation)
    if interpretation == "cmyk":
        reasons.append("CMYK")
    elif interpretation in ("b-w", "grey16"):
        reasons.append("greyscale")
    elif image.hasalpha():
        reasons.append("alpha channel")
    elif image.bands != 3 or interpretation not in RGB_INTERPRETATIONS:
        reasons.append(f"{image.bands} bands of {interpretation}, not RGB")
    if image.format != "uchar":
        reasons.append("16-bit" if image.format in ("ushort", "short") else f"{image.format}")
    fields = set(image.get_fields())
    orientation = int(image.get("orientation")) if "orientation" in fields else 1
    if orientation != 1:
        reasons.append(f"EXIF orientation {orientation}")
    if header.convert_profile:
        reasons.append("ICC profile not sRGB")
    if header.pages > 1:
        # Only GIF and WebP animate, so a JPEG never lands here; the rule stays in case
        # the GPU path is ever opened to other formats.
        reasons.append("animated")
    return plan, "; ".join(reasons) or None


def render_batch(
    requests: list[RenderRequest],
    device: str = "cuda",
    *,
    encode_threads: int | None = None,
) -> list[dict[str, Any] | Exception]:
    """Render each request as ``stages.image.render`` would; one result per request.

    A result is render()'s dict, or the exception that request raised: a corrupt file in
    the batch fails alone, with the BadInputError the CPU stage gives it. WebP and AVIF
    are encoded on ``encode_threads`` CPU threads (default: one per core) while the GPU
    goes on with the next input. Without torch and torchvision the whole call raises
    ImportError when any input is eligible: such a worker is misconfigured, not unlucky.
    """
    results: list[dict[str, Any] | Exception | None] = [None] * len(requests)
    jobs: list[_Job] = []
    for i, req in enumerate(requests):
        src = Path(req.input)
        try:
            plan, reason = _eligibility(src, req.options)
            data = b"" if reason is not None else src.read_bytes()
        except OSError:
            reason = "unreadable"  # render() reports it the way the CPU stage does
        except Exception as exc:
            # A bad option or input raises here what render() raises (BadInputError, or
            # ValueError for a max_pixels that is not a number): this request fails alone.
            results[i] = exc
            continue
        if reason is None and not _has_end_marker(data):
            # libvips rejects a cut-off JPEG (fail_on=error); what nvJPEG makes of one is
            # not documented, so it goes where the answer is known: the same error.
            reason = "no end-of-image marker after the first scan"
        if reason is not None:
            log.info("%s: rendered on the CPU (%s)", src, reason)
            results[i] = _render_on_cpu(req)
        else:
            jobs.append(_Job(i, req, src, data, plan))

    if jobs:
        torch, functional, tvio = _torch_modules()
        decoded = _decode_all(torch, tvio, [job.data for job in jobs], device)
        threads = encode_threads or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gpu-encode") as pool:
            pending: list[tuple[int, Callable[[], dict[str, Any] | Exception]]] = []
            for k, job in enumerate(jobs):
                # Dropped as soon as used: a batch of large images is heavy on the device.
                pixels, decoded[k], job.data = decoded[k], None, b""
                if pixels is None:
                    log.warning("%s: the decoder refused it; rendered on the CPU", job.src)
                    results[job.index] = _render_on_cpu(job.req)
                    continue
                try:
                    collect = _render_on_device(torch, functional, tvio, job, pixels, pool)
                except Exception as exc:
                    # Out of GPU memory or a codec limit: the CPU can still make the
                    # right picture, and nothing has been written yet.
                    log.warning("%s: GPU rendering failed (%s); rendered on the CPU", job.src, exc)
                    results[job.index] = _render_on_cpu(job.req)
                    continue
                pending.append((job.index, collect))
            for index, collect in pending:
                results[index] = collect()
    return cast(list[dict[str, Any] | Exception], results)  # every slot is set by now


@dataclass
class _Job:
    index: int
    req: RenderRequest
    src: Path
    data: bytes
    plan: RenditionPlan


def _torch_modules() -> tuple[ModuleType, ModuleType, ModuleType]:
    torch = importlib.import_module("torch")
    functional = importlib.import_module("torch.nn.functional")
    tvio = importlib.import_module("torchvision.io")
    # Touch the codecs: a torchvision whose image extension did not load imports fine and
    # fails only here.
    _ = tvio.decode_jpeg, tvio.encode_jpeg, tvio.ImageReadMode.RGB
    return torch, functional, tvio


def _render_on_cpu(req: RenderRequest) -> dict[str, Any] | Exception:
    try:
        return render(req.input, req.out_dir, **req.options)
    except Exception as exc:
        return exc


def _has_end_marker(data: bytes) -> bool:
    """Whether an EOI marker follows the first scan of the main image.

    The header segments are walked rather than searched: an EXIF thumbnail in APP1 is a
    whole JPEG with its own scan and EOI, which a plain search would find first.
    """
    pos, size = 2, len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0xDA:  # start of scan: entropy-coded data never contains FF D9
            return data.find(b"\xff\xd9", pos + 2) >= 0
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return False


def _decode_all(torch: Any, tvio: Any, datas: list[bytes], device: str) -> list[Any | None]:
    """Decode every input in one batched call; None for each one the decoder refuses."""
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    rgb = tvio.ImageReadMode.RGB
    try:
        return list(tvio.decode_jpeg(tensors, mode=rgb, device=device))
    except RuntimeError:
        pass
    # One bad bitstream fails the whole batched call: decode one by one to find it.
    out: list[Any | None] = []
    for t in tensors:
        try:
            out.append(tvio.decode_jpeg([t], mode=rgb, device=device)[0])
        except RuntimeError:
            out.append(None)
    return out


def _render_on_device(
    torch: Any,
    functional: Any,
    tvio: Any,
    job: _Job,
    pixels: Any,
    pool: ThreadPoolExecutor,
) -> Callable[[], dict[str, Any] | Exception]:
    """Resize and encode on the device, queue the writes; return what collects them.

    Everything that can fail on the device happens before the first write, so a failure
    here leaves no file behind and the CPU can start over cleanly.
    """
    plan = job.plan
    height, width = int(pixels.shape[1]), int(pixels.shape[2])

    as_float = None
    outputs: list[tuple[Path, str, bytes | None, Any]] = []
    for w in plan.widths_for(width):
        h = plan.height_at(w, width, height)
        if (w, h) == (width, height):
            resized = pixels
        else:
            if as_float is None:
                as_float = pixels.unsqueeze(0).float()
            scaled = functional.interpolate(
                as_float, size=(h, w), mode=RESIZE_MODE, antialias=True, align_corners=False
            )
            # Bicubic overshoots at edges: clamp, or 256 wraps to 0 in uint8.
            resized = scaled[0].round_().clamp_(0, 255).to(torch.uint8)
        host = None
        if any(f != "jpeg" for f in plan.formats):
            host = resized.permute(1, 2, 0).contiguous().cpu().numpy()
        for fmt in plan.formats:
            final = plan.path(job.req.out_dir, job.src, w, fmt)
            if fmt == "jpeg":
                encoded = tvio.encode_jpeg(resized, quality=int(plan.quality["jpeg"]))
                outputs.append((final, fmt, encoded.cpu().numpy().tobytes(), None))
            else:
                outputs.append((final, fmt, None, host))
    del as_float

    futures: list[Future[dict[str, Any]]] = []
    for final, fmt, encoded, host in outputs:
        if encoded is not None:
            futures.append(pool.submit(_write_bytes, final, fmt, encoded))
        else:
            futures.append(pool.submit(_encode_on_cpu, plan, final, fmt, host))
    source = {"width": width, "height": height}

    def collect() -> dict[str, Any] | Exception:
        renditions: list[dict[str, Any]] = []
        error: Exception | None = None
        for fut in futures:  # all of them, so none is still writing when we return
            try:
                renditions.append(fut.result())
            except Exception as exc:
                error = error or exc
        return error if error is not None else {"renditions": renditions, "source": source}

    return collect


def _write_bytes(final: Path, fmt: str, encoded: bytes) -> dict[str, Any]:
    with atomic_output(final) as tmp:
        tmp.write_bytes(encoded)
    return image_facts(final, fmt)


def _encode_on_cpu(plan: RenditionPlan, final: Path, fmt: str, host: Any) -> dict[str, Any]:
    import pyvips

    height, width, bands = host.shape
    image = pyvips.Image.new_from_memory(host.data, width, height, bands, "uchar")
    # The encoders read the interpretation to decide how to treat the bands.
    image = image.copy(interpretation="srgb")
    with atomic_output(final) as tmp:
        plan.save(image, tmp, fmt)  # eligible plans keep no metadata
    return image_facts(final, fmt)


# The device the lane renders on. "cuda" on a GPU worker; "cpu" runs the same code on
# PyTorch's CPU device (tests, and checking a box before its GPU arrives).
DEVICE_ENV = "MEDIAPIPE_GPU_DEVICE"


@batched("image_renditions", needs=("nvjpeg",), size=32)
def image_renditions_batch(jobs: list[Any]) -> list[dict[str, Any] | Exception | None]:
    """The GPU worker's way to run ``image_renditions`` jobs: one batch, one decode call.

    Jobs that publish to external storage are declined (None): the stage function's
    storage wrapper, breaker checks included, runs them one at a time.
    """
    configure_vips_for_pool()
    outcomes: list[dict[str, Any] | Exception | None] = [None] * len(jobs)
    picked = [i for i, job in enumerate(jobs) if not job.params.get("storage")]
    requests = [
        RenderRequest(
            jobs[i].params["input"],
            jobs[i].params["out_dir"],
            render_options(jobs[i].params),
        )
        for i in picked
    ]
    start = time.monotonic()
    results = render_batch(requests, os.environ.get(DEVICE_ENV, "cuda"))
    each = (time.monotonic() - start) / max(1, len(picked))
    for i, result in zip(picked, results, strict=True):
        if isinstance(result, dict):
            # What the stage contract gives the one-job stage, plus the batch it ran in.
            result["stage_info"] = stage_info(jobs[i].attempt, each, batch=len(picked))
        outcomes[i] = result
    return outcomes
