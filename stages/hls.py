"""hls_package: the ladder as HLS (fMP4 segments) with a master playlist.

The ladder's MP4s are already H.264/AAC with aligned keyframes, so packaging is a stream
copy: no second encode. The whole package is written to a temporary directory and
renamed into place, so a player never sees a master playlist without its segments. The
segments carry no metadata but what the ladder kept (none, unless the preset says so), and
no data or subtitle streams. The master playlist's facts give the largest variant's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.contract import media_stage
from stages.ffmpeg_run import compile_cmd, run, safe_input, strip_metadata
from stages.ladder_segments import JOIN_JOB
from stages.output import atomic_dir, file_facts, output_name, output_path
from stages.params import boolean, number, param
from stages.storage import fetch


@dataclass(frozen=True)
class HlsParams:
    segment_seconds: float = param(4, number(1, 60), "target segment length")
    keep_metadata: bool = param(False, boolean, "keep what the ladder kept of the tags")


@media_stage(
    "hls_package",
    params=HlsParams,
    needs=("video_ladder",),
    outputs=("hls",),
    kinds=("video",),
    timeout=3600,
    reads_input=False,
)
def hls_package(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    # A long video's ladder ran as segments: its renditions come from their join.
    renditions = (inputs.get(JOIN_JOB) or inputs["video_ladder"])["renditions"]
    src = params["input"]
    name = output_name(params.get("name") or Path(src).stem)
    seconds = float(params["segment_seconds"])
    final = output_path(params["out_dir"], f"{name}_hls")
    variants = []
    with atomic_dir(final) as tmp:
        for i, r in enumerate(renditions):
            # Rung names come from the ladder's result: checked again, since this stage
            # replaces an existing package with whatever it builds here.
            sub = output_path(tmp, r["rung"])
            sub.mkdir()
            source = fetch(r["path"], output_path(tmp, f".{r['rung']}.mp4"), params)
            graph = safe_input(str(source)).output(
                str(sub / "index.m3u8"),
                c="copy",
                f="hls",
                hls_time=seconds,
                hls_playlist_type="vod",
                hls_segment_type="fmp4",
                hls_fmp4_init_filename="init.mp4",
                hls_segment_filename=str(sub / "seg_%04d.m4s"),
                dn=None,
                sn=None,
                **strip_metadata(bool(params["keep_metadata"])),
            )
            run(compile_cmd(graph), source=r["path"])
            if source != Path(r["path"]):
                source.unlink()
            ctx.progress(100 * (i + 1) / len(renditions), "packaging HLS")
            bandwidth = int(r["bytes"] * 8 / max(r["duration"] or 1, 0.001) * 1.1)
            variants.append((r, bandwidth))
        lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
        for r, bandwidth in variants:
            codecs = "avc1.640028,mp4a.40.2" if r.get("audio_codec") else "avc1.640028"
            lines.append(
                f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},"
                f'RESOLUTION={r["width"]}x{r["height"]},CODECS="{codecs}"'
            )
            lines.append(f"{r['rung']}/index.m3u8")
        (tmp / "master.m3u8").write_text("\n".join(lines) + "\n")
    master = final / "master.m3u8"
    largest = max(renditions, key=lambda r: (r["width"] or 0) * (r["height"] or 0))
    return {
        "hls": file_facts(
            master,
            kind="hls",
            format="m3u8",
            width=largest["width"],
            height=largest["height"],
            duration=renditions[0]["duration"],
            variants=[r["rung"] for r, _ in variants],
        )
    }
