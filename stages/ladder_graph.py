"""The ffmpeg graph of a rendition ladder: which rungs a source gets, and the one command
that decodes it once and encodes every rung (``stages.video`` explains the choices).
Shared by the one-job ladder and the segment jobs of a long video
(``stages.ladder_segments``), so both encode with exactly the same settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from pipeline.errors import BadInputError
from stages.color import BT709_TAGS, needs_conversion, to_sdr
from stages.ffmpeg_run import compile_cmd, safe_input, strip_metadata

DEFAULT_RUNGS = [
    {"name": "1080p", "height": 1080, "crf": 21, "maxrate": "6M"},
    {"name": "720p", "height": 720, "crf": 22, "maxrate": "3M"},
    {"name": "480p", "height": 480, "crf": 23, "maxrate": "1.5M"},
]


def even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def plan_rungs(width: int, height: int, rungs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rungs that do not upscale, with even dimensions keeping the aspect ratio.

    A rung's ``height`` names the frame's short side (1080p), so a portrait phone video
    gets 1080x1920 at the 1080p rung, not a 608x1080 postage stamp. When the source is
    smaller than every rung, it gets one rung at its own size (made even).
    """
    short = min(width, height)
    fitting = [dict(r) for r in rungs if r["height"] <= short]
    if not fitting:
        smallest = min(rungs, key=lambda r: r["height"])
        fitting = [{**smallest, "name": f"{even(short)}p", "height": short}]
    planned, seen = [], set()
    for r in sorted(fitting, key=lambda r: -r["height"]):
        scale = r["height"] / short
        w, h = even(width * scale), even(height * scale)
        if (w, h) in seen:
            continue
        seen.add((w, h))
        planned.append({**r, "width": w, "height": h})
    return planned


X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast",
    "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip


GPU_MODES = ("decode", "nvenc")


def gpu_mode(requested: str, tags: Iterable[str]) -> str:
    """How much of the ladder runs on the GPU: "" (none), "decode" (NVDEC decode and
    scale_cuda, x264 on the CPU cores) or "nvenc" (NVENC encodes too).

    ``auto`` follows the capabilities the job was routed for (``ctx.tags``): a job routed
    for ``nvdec`` was claimed by a worker whose trial runs proved NVDEC, so only such a job
    uses it; a job in a plain queue may run on a box without a GPU and stays on the CPU.
    """
    if requested in ("off", ""):
        return ""
    tags = set(tags)
    if requested == "auto":
        if "nvenc" in tags and "nvdec" in tags:
            return "nvenc"
        return "decode" if "nvdec" in tags else ""
    if requested not in GPU_MODES:
        raise BadInputError(f"video_ladder: gpu must be auto, off or one of {GPU_MODES}")
    return requested


def ladder_command(
    src: str,
    rungs: list[dict[str, Any]],
    outputs: list[str],
    *,
    has_audio: bool,
    preset: str = "veryfast",
    audio_bitrate: str = "128k",
    threads: int = 0,
    gpu: str = "",
    color: dict[str, Any] | None = None,
    keep_metadata: bool = False,
    keyframes: str = "expr:gte(t,n_forced*2)",
) -> list[str]:
    """The one ffmpeg command for the whole ladder. ``gpu`` (see ``gpu_mode``): "decode"
    decodes with NVDEC and scales with scale_cuda, frames come back to memory for x264 (a
    Hopper card has no NVENC); "nvenc" keeps them on the GPU for h264_nvenc. ``color``
    (``stages.color.video_color``) says whether the frames need converting to BT.709 SDR
    (CPU only); ``keep_metadata`` keeps the source's tags in the outputs. ``keyframes``:
    where keyframes are forced (``-force_key_frames``), by default every 2 s."""
    import ffmpeg

    hw = {"hwaccel": "cuda", "hwaccel_output_format": "cuda"} if gpu else {}
    inp = safe_input(src, **hw)
    if gpu:
        split = inp.video.filter_multi_output("split", len(rungs))
        videos = []
        for i, r in enumerate(rungs):
            v = split[i].filter("scale_cuda", r["width"], r["height"], format="yuv420p")
            if gpu != "nvenc":
                v = v.filter("hwdownload").filter("format", "yuv420p")
            videos.append(v)
    else:
        videos = _cascade(to_sdr(inp.video, color or {}), rungs)
    x264_threads = encoder_threads(rungs, threads)
    outs = []
    for i, (r, out) in enumerate(zip(rungs, outputs, strict=True)):
        v = videos[i]
        streams = [v, inp["a:0"]] if has_audio else [v]
        opts: dict[str, Any] = {
            "profile:v": "high",
            "movflags": "+faststart",
            "f": "mp4",
            # A keyframe every 2 s on every rung, at the same times: HLS can cut segments
            # there and a player can switch rungs at any segment boundary.
            "force_key_frames": keyframes,
            **strip_metadata(keep_metadata),
        }
        if color and needs_conversion(color):
            opts.update(BT709_TAGS)
        if gpu == "nvenc":
            # Constant quality like x264's CRF; forced keyframes must be IDR for HLS cuts.
            opts.update({"vcodec": "h264_nvenc", "preset": "p4", "rc": "vbr",
                         "cq": r.get("crf", 23), "forced-idr": 1, "no-scenecut": 1})  # fmt: skip
        else:
            opts.update({"vcodec": "libx264", "preset": preset, "crf": r.get("crf", 23),
                         "threads": x264_threads[i], "sc_threshold": 0})  # fmt: skip
        if r.get("maxrate"):
            opts.update({"maxrate": r["maxrate"], "bufsize": r.get("bufsize", r["maxrate"])})
        if has_audio:
            opts.update({"acodec": "aac", "audio_bitrate": audio_bitrate, "ac": 2})
        outs.append(ffmpeg.output(*streams, out, **opts))
    return compile_cmd(ffmpeg.merge_outputs(*outs))


def _cascade(video: Any, rungs: list[dict[str, Any]]) -> list[Any]:
    """Each rung's scaled frames (in ``rungs``' order), each scaled from the smallest larger
    rung that covers it, else from the source.

    A bicubic 1080p -> 720p -> 480p chain scores 40.32 dB PSNR against a Lanczos 480p of
    the source after x264, against 40.40 dB scaled directly (20 s clip, CRF 23), for a
    scale that reads 0.9 instead of 2.1 megapixels a frame.
    """
    order = sorted(range(len(rungs)), key=lambda i: -rungs[i]["width"] * rungs[i]["height"])
    parent: dict[int, int] = {}  # rung -> the rung it is scaled from (-1: the source)
    for pos, i in enumerate(order):
        covers = [
            j
            for j in order[:pos]
            if rungs[j]["width"] >= rungs[i]["width"] and rungs[j]["height"] >= rungs[i]["height"]
        ]
        parent[i] = covers[-1] if covers else -1
    feeds: dict[int, Any] = {}  # rung -> the frames its scaler reads
    finished: dict[int, Any] = {}  # rung -> the frames its encoder reads

    def branch(node: int, stream: Any) -> None:
        """Hand ``stream`` to the node's own encoder (a rung) and to each rung scaled from it."""
        targets = ([node] if node >= 0 else []) + [i for i in order if parent[i] == node]
        split = stream.filter_multi_output("split", len(targets)) if len(targets) > 1 else None
        for k, target in enumerate(targets):
            (finished if target == node else feeds)[target] = stream if split is None else split[k]

    branch(-1, video)
    for i in order:
        r = rungs[i]
        branch(i, feeds[i].filter("scale", r["width"], r["height"]).filter("format", "yuv420p"))
    return [finished[i] for i in range(len(rungs))]


def encoder_threads(
    rungs: list[dict[str, Any]], threads: int = 0, cores: int | None = None
) -> list[int]:
    """x264 threads for each rung's encoder.

    ``threads`` > 0 is used for every encoder, as asked. Otherwise the cores are shared by
    pixel count, 1.5 threads per core as x264 itself starts for one encoder: three
    encoders in one process each starting threads for every core would run 9 threads on
    2 cores, and frame threads cost CPU of their own (a 20 s 1080p/720p/480p ladder on 2
    cores: threads 2/1/1 used 2 % less CPU than 3/3/3). One rung keeps x264's own choice.
    """
    if threads > 0:
        return [threads] * len(rungs)
    if len(rungs) < 2:
        return [0] * len(rungs)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pixels = [r["width"] * r["height"] for r in rungs]
    total = sum(pixels)
    return [max(1, round(1.5 * (cores or 1) * p / total)) for p in pixels]
