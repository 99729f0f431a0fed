"""Running ffmpeg: which binary, safe input options, live progress, clear failures.

Commands are built with ffmpeg-python (a graph compiled to an argument list, never a
shell string), so the exact command can be logged and rerun by hand.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from pipeline.errors import BadInputError, RetryableError
from stages.limits import SAFE_DEMUXERS, SAFE_PROTOCOLS
from stages.output import disk_full_in_text

log = logging.getLogger("mediapipe.ffmpeg")

ProgressFn = Callable[..., None]


@cache
def ffmpeg_exe() -> str:
    """``$MEDIAPIPE_FFMPEG``, else the static ffmpeg from the imageio-ffmpeg wheel."""
    explicit = os.environ.get("MEDIAPIPE_FFMPEG")
    if explicit:
        return explicit
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@cache
def has_filter(name: str) -> bool:
    """Whether this ffmpeg build has the filter ``name`` (zscale needs libzimg, which an
    ``$MEDIAPIPE_FFMPEG`` built elsewhere may lack)."""
    listing = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-filters"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return any(line.split()[1:2] == [name] for line in listing.splitlines())


def strip_metadata(keep: bool) -> dict[str, Any]:
    """Output options that drop the input's metadata: global tags (a phone's GPS
    ``location``, ``title``, ``creation_time``, the device's make and model), stream tags
    (``handler_name``), chapters and their titles. ffmpeg copies all of them by default,
    so an output made without these options carries where and when it was filmed. With
    ``keep`` the container's global tags are copied (ffmpeg's default, made explicit)."""
    if keep:
        return {"map_metadata": 0}
    return {"map_metadata": -1, "map_chapters": -1}


def safe_input(path: str, **kwargs: Any) -> Any:
    """An ffmpeg-python input that can only read the file itself: the ``file`` protocol and
    media demuxers only, so a crafted playlist or concat script cannot pull in other files
    or reach the network."""
    import ffmpeg

    return ffmpeg.input(
        path, protocol_whitelist=SAFE_PROTOCOLS, format_whitelist=SAFE_DEMUXERS, **kwargs
    )


def compile_cmd(stream: Any) -> list[str]:
    import ffmpeg

    args: list[str] = ffmpeg.compile(stream, cmd=ffmpeg_exe(), overwrite_output=True)
    # -nostdin: never wait for a keypress; the banner and per-frame stats are noise.
    return [args[0], "-hide_banner", "-nostdin", "-loglevel", "error", *args[1:]]


def run(
    cmd: list[str],
    *,
    source: str,
    duration: float | None = None,
    progress: ProgressFn | None = None,
    label: str = "ffmpeg",
    fps: float | None = None,
) -> None:
    """Run ffmpeg to completion, turning its ``-progress`` output into progress reports.

    A non-zero exit raises BadInputError when ffmpeg says the input is broken (retrying
    cannot help) and RetryableError otherwise, with ffmpeg's last error line.
    """
    full = [*cmd[:1], "-progress", "pipe:1", "-nostats", *cmd[1:]]
    log.info("running: %s", shlex.join(full))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        state: dict[str, str] = {}
        started = time.monotonic()
        try:
            for raw in proc.stdout:
                key, _, value = raw.decode(errors="replace").strip().partition("=")
                state[key] = value
                if key == "progress" and progress is not None:
                    _report(state, duration, started, progress, label, fps)
        except BaseException:
            # Told to stop (JobStopped from a progress report, KeyboardInterrupt): ffmpeg
            # must not outlive the job and keep writing its temporary outputs.
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-12:]
    if code != 0:
        reason = _reason(tail) or f"exit code {code}"
        # Retryable with its one line wherever it happens (scratch, outputs): space can
        # come back; atomic_output names the output it was writing.
        no_space = disk_full_in_text(RuntimeError(" ".join(tail)), f"ffmpeg's output for {source}")
        if no_space is not None:
            raise no_space
        if any(marker in line for line in tail for marker in _BAD_INPUT):
            raise BadInputError(f"{source}: ffmpeg cannot decode it ({reason})")
        raise RetryableError(f"{source}: ffmpeg failed with exit code {code} ({reason})")


_CONTEXT = re.compile(r"^\[[^\]]+ @ 0x[0-9a-f]+\] ")


def _reason(lines: list[str]) -> str:
    """ffmpeg's most telling error line (its first "Error ..." line, else its last line),
    without the ``[codec @ 0x...]`` prefix."""
    cleaned = [_CONTEXT.sub("", line).strip() for line in lines if line.strip()]
    for line in cleaned:
        if "error" in line.lower() or "invalid" in line.lower():
            return line
    return cleaned[-1] if cleaned else ""


_BAD_INPUT = (
    "Invalid data found",
    "moov atom not found",
    "corrupt",
    "Invalid argument",
    "does not contain any stream",
    "Error while decoding",
)


def _report(
    state: dict[str, str],
    duration: float | None,
    started: float,
    progress: ProgressFn,
    label: str,
    source_fps: float | None = None,
) -> None:
    if source_fps and state.get("progress") != "end":
        if _frames(state) > 0:
            _report_frames(state, duration, started, progress, label, source_fps)
            return
        # No video frame written yet (the encoder is still filling its lookahead): ffmpeg's
        # fps (0) and its speed and out_time, which the audio runs ahead by, describe no
        # video ("32 % ... 0 fps 1.8x" on a loaded machine). Nothing encoded, nothing shown.
        progress(0.0, label)
        return
    try:
        done = int(state.get("out_time_us") or state.get("out_time_ms") or 0) / 1e6
    except ValueError:
        done = 0.0
    fields: dict[str, Any] = {}
    fps = state.get("fps", "")
    if fps and fps != "N/A":
        fields["fps"] = round(float(fps), 1)
    speed = state.get("speed", "").rstrip("x").strip()
    if speed and speed != "N/A":
        fields["speed"] = float(speed)
    percent = 0.0
    if duration:
        percent = max(0.0, min(100.0, 100.0 * done / duration))
        rate = done / max(time.monotonic() - started, 1e-6)
        if rate > 0:
            fields["eta"] = round(max(0.0, (duration - done) / rate), 1)
    if state.get("progress") == "end":
        percent = 100.0
    progress(percent, label, **fields)


def _frames(state: dict[str, str]) -> int:
    try:
        return int(state.get("frame") or 0)
    except ValueError:
        return 0


def _report_frames(
    state: dict[str, str],
    duration: float | None,
    started: float,
    progress: ProgressFn,
    label: str,
    source_fps: float,
) -> None:
    """Progress of a video encode from its frame count: fps, speed, percent and eta all
    from one count on one clock, so fps = speed x the source's frame rate. ffmpeg's own
    fields disagree: its ``speed`` follows ``out_time``, which the audio stream runs ahead
    of, and its ``fps`` starts at 0 while out_time already moved (41 % done, 0 fps, 4.9x
    on a 30 fps source)."""
    frames = _frames(state)
    elapsed = max(time.monotonic() - started, 1e-6)
    done = frames / source_fps  # seconds of the source encoded
    fields: dict[str, Any] = {
        "fps": round(frames / elapsed, 1),
        "speed": round(done / elapsed, 2),
        "frame": frames,
        "source_fps": round(source_fps, 3),
    }
    percent = 0.0
    if duration:
        percent = max(0.0, min(100.0, 100.0 * done / duration))
        fields["eta"] = round(max(0.0, (duration - done) / (done / elapsed)), 1)
    if state.get("progress") == "end":
        percent = 100.0
    progress(percent, label, **fields)
