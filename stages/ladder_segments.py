"""A long video's ladder as segments: cut once, encoded by many workers, joined and checked.

``video_ladder`` calls ``fan_out`` for a video longer than its ``segment_above``: the
source's video is cut at keyframes without re-encoding (``stages.segments``) into a
folder beside the outputs, and the job adds to its DAG, at run time:

    ladder_seg_0000 ... ladder_seg_NNNN   one per segment: decode it once, encode every rung
    ladder_audio                          the soundtrack, encoded once for the whole file
    ladder_join                           each rung's segments concatenated (stream copy),
                                          the audio muxed in, faststart MP4, then verified

The join is added as a child of the ladder's own parents (the engine's fan-out), so HLS
packaging and the manifest wait for it and read the renditions from its result. Each
segment job is an ordinary job: any worker claims it, it retries alone, a cancel stops it.

Every segment is encoded with the ladder's settings (``stages.ladder_graph``): x264's
closed GOPs, an IDR at the segment's first frame, and keyframes forced on the source-wide
2 s grid, so the rungs' segments concatenate into one valid stream with keyframes where
the one-job ladder puts them. Audio is never cut: per-segment AAC would add encoder
priming at each join, heard as clicks.

The join checks each rung against the source before it is published: the same frame
count, the duration within one frame, audio and video starting within 20 ms of each
other, and clean decoding on both sides of every join. A rung that fails is a permanent
error that names what differs, never a silently broken file.

The segments' folder is named like every temporary output of the DAG
(``.<name>.<dag key>-segments.part``), so the manifest's sweep removes what a failed or
killed run left; the join removes it once every rung is in place.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import PermanentError
from pipeline.registry import stage
from stages.color import video_color
from stages.contract import stage_info
from stages.ffmpeg_run import compile_cmd, run, safe_input, strip_metadata
from stages.inputs import fetched, is_remote
from stages.ladder_graph import gpu_mode, ladder_command
from stages.limits import SAFE_PROTOCOLS
from stages.media_facts import video_facts
from stages.output import atomic_output, dag_key, output_name, output_path, remove
from stages.segments import (
    decodes_around,
    forced_keyframes,
    joined_facts,
    keyframes,
    plan_cuts,
    split,
)

SEGMENT_STAGE = "ladder_segment"
AUDIO_STAGE = "ladder_audio"
JOIN_STAGE = "ladder_join"
AUDIO_JOB = "ladder_audio"
JOIN_JOB = "ladder_join"
AV_OFFSET_LIMIT = 0.020  # seconds between the audio's and the video's first sample
SEAM_WINDOW = 0.5  # seconds decoded on each side of a join

StageFn = Callable[[Any, dict[str, Any], dict[str, Any]], dict[str, Any]]


def segment_job(index: int) -> str:
    return f"ladder_seg_{index:04d}"


def _with_info(fn: StageFn) -> StageFn:
    """Adds ``stage_info`` (attempt, seconds) as the stage contract does for media stages;
    these stages are the ladder's own steps, which no preset chooses."""

    @functools.wraps(fn)
    def run_stage(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        start = time.monotonic()
        result = fn(ctx, params, inputs)
        result["stage_info"] = stage_info(getattr(ctx, "attempt", 1), time.monotonic() - start)
        return result

    return run_stage


def segments_folder(out_dir: str, name: str, dag_id: str) -> Path:
    """Where the DAG's segments wait: a temporary name of this DAG in its output folder."""
    return output_path(out_dir, f".{name}.{dag_key(dag_id)}-segments.part")


def fan_out(
    ctx: Any,
    params: dict[str, Any],
    probe: dict[str, Any],
    rungs: list[dict[str, Any]],
    *,
    gpu: str,
) -> dict[str, Any]:
    """Cut the source and add the segment, audio and join jobs; the ladder's result says
    how it was cut (its renditions come from ``ladder_join``)."""
    src = params["input"]
    # An input in object storage: this node's copy is its path here, the URI elsewhere.
    source = params.get("input_uri") or src
    name = output_name(params.get("name") or Path(src).stem)
    folder = segments_folder(params["out_dir"], name, ctx.job.dag_id)
    folder.mkdir(parents=True, exist_ok=True)
    kf = keyframes(src)
    plan = plan_cuts(kf, float(params["segment_seconds"]))
    ctx.progress(0, "cutting into segments")
    segments = split(src, folder, kf, plan.cuts)
    shared = {
        "name": name,
        "source": source,
        "folder": str(folder),
        "rungs": rungs,
        "x264_preset": params["x264_preset"],
        "threads": params["threads"],
        "gpu": gpu or "off",
        "count": len(segments),
        "fps": probe.get("fps"),
    }
    sub = ctx.new_children()
    joined_after = []
    for s in segments:
        job = segment_job(s.index)
        seg = s.to_json()
        sub.add(job, SEGMENT_STAGE, {**shared, "input": s.path, "segment": seg})
        joined_after.append(job)
    has_audio = bool(probe.get("audio"))
    if has_audio:
        sub.add(
            AUDIO_JOB,
            AUDIO_STAGE,
            {
                "input": source,
                "input_sha256": params.get("input_sha256"),
                "endpoint": params.get("endpoint"),
                "folder": str(folder),
                "audio_bitrate": params["audio_bitrate"],
            },
        )
        joined_after.append(AUDIO_JOB)
    sub.add(
        JOIN_JOB,
        JOIN_STAGE,
        {
            **shared,
            "input": source,
            "out_dir": params["out_dir"],
            "segments": [s.to_json() for s in segments],
            "has_audio": has_audio,
            "frames": kf.frames,
            "duration": kf.duration,
            "fps": probe.get("fps"),
            "note": plan.note,
        },
        after=joined_after,
    )
    ctx.add_children(sub)
    return {
        "segmented": {
            "segments": len(segments),
            "wanted": plan.wanted,
            "seconds": [round(s.duration, 3) for s in segments],
            "frames": kf.frames,
            **({"note": plan.note} if plan.note else {}),
        },
        "gpu": gpu or "off",
    }


@stage(SEGMENT_STAGE, cost=2, timeout=6 * 3600)
@_with_info
def ladder_segment(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """One segment to every rung: decoded once, each rung encoded with the ladder's
    settings and keyframes forced on the source's 2 s grid."""
    seg = params["segment"]
    src = params["input"]
    folder = Path(params["folder"])
    rungs = params["rungs"]
    gpu = gpu_mode(str(params.get("gpu") or "off"), ctx.tags)
    color = video_color(src)
    index = int(seg["index"])
    finals = [output_path(folder, f"seg_{index:04d}_{r['name']}.mp4") for r in rungs]
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_output(f)) for f in finals]
        cmd = ladder_command(
            src,
            rungs,
            [str(t) for t in tmps],
            has_audio=False,
            preset=params["x264_preset"],
            threads=int(params["threads"]),
            gpu=gpu,
            color=color,
            keyframes=forced_keyframes(float(seg["start"]), float(seg["duration"])),
        )
        run(
            cmd,
            source=f"{params['source']} (segment {index + 1} of {params['count']})",
            duration=float(seg["duration"]),
            progress=ctx.progress,
            label=f"transcoding segment {index + 1}/{params['count']}",
            fps=params.get("fps"),
        )
        for tmp, r in zip(tmps, rungs, strict=True):
            frames = joined_facts(tmp).frames
            if frames != int(seg["frames"]):
                # Frames missing at a cut: the source's keyframe there is not a clean entry
                # point (an open GOP whose leading frames reach into the segment before).
                raise PermanentError(
                    f"{params['source']}: segment {index + 1} at {seg['start']:.2f} s decoded"
                    f" to {frames} frames at {r['name']}, not {seg['frames']} (a keyframe there"
                    " is not a clean cut; set the ladder's segment_above to 0)"
                )
    return {"segment": index, "frames": int(seg["frames"]), "files": [str(f) for f in finals]}


@stage(AUDIO_STAGE, timeout=1800)
@_with_info
def ladder_audio(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The source's first audio stream, encoded once as the ladder encodes it (AAC,
    stereo), for the join to mux into every rung."""
    src = params["input"]
    with contextlib.ExitStack() as stack:
        if is_remote(src):
            copy = fetched(src, params, progress=ctx.progress, dag_id=ctx.job.dag_id)
            src = str(stack.enter_context(copy))
        return _encode_audio(ctx, src, params)


def _encode_audio(ctx: Any, src: str, params: dict[str, Any]) -> dict[str, Any]:
    final = output_path(params["folder"], "audio.m4a")
    with atomic_output(final) as tmp:
        graph = safe_input(src)["a:0"].output(
            str(tmp),
            acodec="aac",
            audio_bitrate=params["audio_bitrate"],
            ac=2,
            f="mp4",
            map_metadata=-1,
            map_chapters=-1,
        )
        run(compile_cmd(graph), source=src, progress=ctx.progress, label="audio")
    return {"track": str(final)}


@stage(JOIN_STAGE, timeout=3600)
@_with_info
def ladder_join(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Each rung's segments concatenated and muxed with the audio, checked against the
    source, and published under the name the one-job ladder gives it."""
    import ffmpeg

    folder = Path(params["folder"])
    name = params["name"]
    rungs = params["rungs"]
    segments = params["segments"]
    finals = [output_path(params["out_dir"], f"{name}_{r['name']}.mp4") for r in rungs]
    if not folder.exists() and all(f.exists() for f in finals):
        # An earlier attempt published every rung and removed the segments, then stopped
        # before it reported: what it published is the result.
        return _result(params, finals, rungs)
    seams = [float(s["start"]) for s in segments[1:]]
    for i, (final, r) in enumerate(zip(finals, rungs, strict=True)):
        listing = output_path(folder, f"join_{r['name']}.txt")
        listing.write_text(
            "".join(f"file 'seg_{int(s['index']):04d}_{r['name']}.mp4'\n" for s in segments)
        )
        with atomic_output(final) as tmp:
            video = ffmpeg.input(
                str(listing),
                f="concat",
                safe=1,
                protocol_whitelist=SAFE_PROTOCOLS,
                format_whitelist="concat,mov,mp4,m4a,3gp,3g2,mj2",
            )
            streams = [video["v:0"]]
            if params["has_audio"]:
                streams.append(safe_input(str(folder / "audio.m4a"))["a:0"])
            opts: dict[str, Any] = {"c": "copy", "movflags": "+faststart", "f": "mp4"}
            cmd = compile_cmd(ffmpeg.output(*streams, str(tmp), **opts, **strip_metadata(False)))
            run(cmd, source=f"{params['source']} ({r['name']} join)")
            verify(tmp, params, r["name"], seams)
        ctx.progress(100 * (i + 1) / len(rungs), "joining segments")
    remove(folder)
    return _result(params, finals, rungs)


def _result(
    params: dict[str, Any], finals: list[Path], rungs: list[dict[str, Any]]
) -> dict[str, Any]:
    renditions = [video_facts(f, rung=r["name"]) for f, r in zip(finals, rungs, strict=True)]
    out: dict[str, Any] = {"renditions": renditions, "segments": len(params["segments"])}
    if params.get("note"):
        out["reason"] = params["note"]
    return out


def verify(path: Path, params: dict[str, Any], rung: str, seams: list[float]) -> None:
    """PermanentError naming what differs unless the joined rung has the source's frames,
    its duration within one frame, A/V starting together and decodes across every join."""
    facts = joined_facts(path)
    source = params["source"]
    want = int(params["frames"])
    if facts.frames != want:
        raise PermanentError(
            f"{source}: the joined {rung} rendition has {facts.frames} frames, the source {want}"
        )
    fps = float(params.get("fps") or 0) or (want / max(float(params["duration"]), 1e-3))
    frame = 1.0 / fps
    if abs(facts.duration - float(params["duration"])) > frame + 1e-3:
        raise PermanentError(
            f"{source}: the joined {rung} rendition lasts {facts.duration:.3f} s, the source"
            f" {float(params['duration']):.3f} s"
        )
    if facts.audio_start is not None:
        offset = facts.audio_start - facts.video_start
        if abs(offset) > AV_OFFSET_LIMIT:
            raise PermanentError(
                f"{source}: the joined {rung} rendition's audio starts {offset * 1000:.0f} ms"
                " from its video"
            )
    decodes_around(path, seams, SEAM_WINDOW)
