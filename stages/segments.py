"""Cutting a video into segments at its keyframes, and checking a joined rendition.

A long video is transcoded as segments on many workers (``stages.ladder_segments``). The
cuts are made without re-encoding: the source's video packets are copied into one file a
segment, each starting at a keyframe, so every segment decodes on its own and together
they hold every frame once. Cuts are chosen by frame index, from the keyframes the
demuxer flags, nearest to equal-duration boundaries; a source with few keyframes gets
fewer, uneven segments, and the plan says so.

Frame indices, not times: ffmpeg's segment muxer cuts exactly before the packet numbered
in ``segment_frames``, whatever the container's start offset or B-frame delay, so the
frames of segment k are exactly those from its cut to the next. With a closed GOP (a
keyframe no later frame reaches behind) the index of a keyframe in decode order equals
its index in display order, which is what the join's frame count checks.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import BadInputError, PermanentError
from stages.ffmpeg_run import compile_cmd, run, safe_input
from stages.limits import SAFE_DEMUXERS, SAFE_PROTOCOLS
from stages.output import remove

# A keyframe further than this share of a segment from the ideal cut is still taken (the
# nearest one), but the plan notes that the segments came out uneven.
UNEVEN = 0.25


@dataclass(frozen=True)
class Keyframes:
    """Where a video can be cut: the frame index and time (seconds from the first frame)
    of every keyframe, and the stream's frame count and duration."""

    indices: tuple[int, ...]
    times: tuple[float, ...]
    frames: int
    duration: float


@dataclass(frozen=True)
class Segment:
    index: int
    first_frame: int
    frames: int
    start: float  # seconds from the source's first frame
    duration: float
    path: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    cuts: tuple[int, ...]  # frame index where each segment after the first starts
    wanted: int  # segments the target length asked for
    note: str  # "" when the cuts came out as asked


def keyframes(src: str) -> Keyframes:
    """The keyframes of the first video stream, read from its packets (no decoding)."""
    import av

    try:
        container = av.open(
            src, options={"format_whitelist": SAFE_DEMUXERS, "protocol_whitelist": SAFE_PROTOCOLS}
        )
    except av.FFmpegError as exc:
        raise BadInputError(f"{src}: cannot read it to cut segments ({exc})") from None
    indices: list[int] = []
    pts: list[int] = []
    first: int | None = None
    last_end = 0
    n = 0
    with container:
        stream = container.streams.video[0]
        tb = stream.time_base
        for packet in container.demux(stream):
            if packet.size == 0 and packet.pts is None:
                continue  # the flush packet
            if packet.pts is not None:
                first = packet.pts if first is None else min(first, packet.pts)
                last_end = max(last_end, packet.pts + (packet.duration or 0))
            if packet.is_keyframe and packet.pts is not None:
                indices.append(n)
                pts.append(packet.pts)
            n += 1
    base = first or 0
    seconds = float(tb) if tb is not None else 0.0
    times = tuple((p - base) * seconds for p in pts)
    return Keyframes(tuple(indices), times, n, (last_end - base) * seconds)


def plan_cuts(kf: Keyframes, target: float) -> Plan:
    """Cuts near ``kf.duration / n`` boundaries, n the count closest to ``target``-second
    segments: at each boundary the nearest keyframe not already taken."""
    wanted = max(1, round(kf.duration / target)) if target > 0 else 1
    usable = [(i, t) for i, t in zip(kf.indices, kf.times, strict=True) if i > 0]
    cuts: list[int] = []
    uneven = False
    for k in range(1, wanted):
        ideal = kf.duration * k / wanted
        after_last = [(i, t) for i, t in usable if not cuts or i > cuts[-1]]
        if not after_last:
            break
        i, t = min(after_last, key=lambda it: abs(it[1] - ideal))
        if cuts and i == cuts[-1]:
            continue
        uneven = uneven or abs(t - ideal) > UNEVEN * kf.duration / wanted
        cuts.append(i)
    cuts = sorted(set(cuts))
    note = ""
    if len(cuts) + 1 < wanted:
        gap = _mean_gap(kf)
        note = (
            f"{len(cuts) + 1} segment(s) instead of {wanted}: the source has "
            f"{len(kf.indices)} keyframe(s)" + (f", one every {gap:.1f} s" if gap else "")
        )
    elif uneven:
        note = "segments of uneven length: the source's keyframes are far from equal cuts"
    return Plan(tuple(cuts), wanted, note)


def _mean_gap(kf: Keyframes) -> float:
    if len(kf.times) < 2:
        return 0.0
    return (kf.times[-1] - kf.times[0]) / (len(kf.times) - 1)


def split(src: str, folder: Path, kf: Keyframes, cuts: tuple[int, ...]) -> list[Segment]:
    """Copy the video packets of ``src`` into one MP4 a segment under ``folder``
    (``src_0000.mp4``...), cut before the frames ``cuts`` names.

    The files appear under their final names only when all of them are complete (written
    into a scratch folder first), and existing ones are kept: an earlier attempt of the
    same plan wrote the same packets, and a segment job may already be reading them.
    """
    starts = (0, *cuts)
    ends = (*cuts, kf.frames)
    by_index = dict(zip(kf.indices, kf.times, strict=True))
    segments = []
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
        start = by_index.get(a, 0.0)
        end = by_index.get(b, kf.duration) if b < kf.frames else kf.duration
        path = folder / f"src_{k:04d}.mp4"
        segments.append(Segment(k, a, b - a, start, end - start, str(path)))
    if all(Path(s.path).exists() for s in segments):
        return segments
    scratch = folder / f".split-{os.getpid()}"
    remove(scratch)
    scratch.mkdir()
    try:
        opts: dict[str, Any] = {
            "map": "0:v:0",
            "c": "copy",
            "f": "segment",
            "segment_format": "mp4",
            "reset_timestamps": 1,
            "segment_list": str(scratch / "list.csv"),
            "segment_list_type": "csv",
            "map_metadata": -1,
            "map_chapters": -1,
        }
        if cuts:
            opts["segment_frames"] = ",".join(str(c) for c in cuts)
        else:
            opts["segment_time"] = 10**9  # one segment
        run(compile_cmd(safe_input(src).output(str(scratch / "src_%04d.mp4"), **opts)), source=src)
        with open(scratch / "list.csv", newline="") as f:
            made = [row[0] for row in csv.reader(f) if row]
        if len(made) != len(segments):
            raise PermanentError(
                f"{src}: cutting at keyframes made {len(made)} segments, not {len(segments)}"
            )
        for s in segments:
            final = Path(s.path)
            if not final.exists():
                os.replace(scratch / final.name, final)
    finally:
        remove(scratch)
    return segments


def forced_keyframes(start: float, duration: float, every: float = 2.0) -> str:
    """``-force_key_frames`` times for a segment starting ``start`` s into the source:
    its first frame, then the source-wide grid of ``every`` s (0, 2, 4...) in the
    segment's own time, so the joined rendition has keyframes where the unsegmented one
    would and every rung has them at the same times (HLS cuts, rung switching)."""
    times = [0.0]
    k = math.floor(start / every + 1e-9) + 1
    while k * every - start < duration - 1e-6:
        t = round(k * every - start, 6)
        if t > 1e-3:
            times.append(t)
        k += 1
    return ",".join(f"{t:g}" for t in times)


@dataclass(frozen=True)
class JoinedFacts:
    frames: int
    duration: float
    video_start: float
    audio_start: float | None
    audio_duration: float | None


def joined_facts(path: str | os.PathLike[str]) -> JoinedFacts:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None

        def seconds(s: Any, value: int | None) -> float:
            return float(value * s.time_base) if value is not None and s.time_base else 0.0

        frames = v.frames or sum(1 for _ in c.demux(v))
        return JoinedFacts(
            frames=frames,
            duration=seconds(v, v.duration),
            video_start=seconds(v, v.start_time),
            audio_start=seconds(a, a.start_time) if a is not None else None,
            audio_duration=seconds(a, a.duration) if a is not None else None,
        )


def decodes_around(path: str | os.PathLike[str], times: list[float], window: float) -> int:
    """Decode ``window`` seconds after each of ``times`` (the joins); returns the frames
    decoded, raising PermanentError naming the time where decoding fails."""
    import av

    decoded = 0
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        tb = v.time_base
        for t in times:
            at = max(0.0, t - window)
            try:
                c.seek(int(at / tb), stream=v, backward=True) if tb else c.seek(0)
                for frame in c.decode(v):
                    decoded += 1
                    if frame.time is not None and frame.time >= t + window:
                        break
            except av.FFmpegError as exc:
                raise PermanentError(f"{path}: does not decode near {t:.2f} s ({exc})") from None
    return decoded
