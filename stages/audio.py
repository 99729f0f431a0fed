"""audio_extract: the soundtrack as its own file (AAC in .m4a, or Opus in .opus).

AAC input is copied, not re-encoded (no generation loss, no CPU). A video without audio
is not an error: the stage reports that there was nothing to extract. The source's tags
(title, location, handler names, chapters) are dropped unless the preset keeps them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.registry import stage
from stages.ffmpeg_run import compile_cmd, run, safe_input, strip_metadata
from stages.media_facts import audio_facts
from stages.output import atomic_output, output_name, output_path
from stages.storage import stores_outputs
from stages.timing import reports_timing

CODECS = {"aac": ("aac", "m4a", "ipod"), "opus": ("libopus", "opus", "opus")}


@stage("audio_extract", queue="default", cost=1, timeout=1800, attempts=3)
@reports_timing
@stores_outputs
def audio_extract(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    probe = inputs["probe"]
    src = params["input"]
    if not probe.get("audio"):
        return {"audio": None, "reason": "no audio stream"}
    codec = params.get("codec", "aac")
    if codec not in CODECS:
        from pipeline.errors import PermanentError

        raise PermanentError(f"audio codec {codec!r} not supported (use aac or opus)")
    encoder, ext, muxer = CODECS[codec]
    name = output_name(params.get("name") or Path(src).stem)
    final = output_path(params["out_dir"], f"{name}_audio.{ext}")
    copy = codec == "aac" and probe["audio"][0]["codec"] == "aac"
    with atomic_output(final) as tmp:
        opts: dict[str, Any] = {
            "acodec": "copy" if copy else encoder,
            "f": muxer,
            **strip_metadata(bool(params.get("keep_metadata", False))),
        }
        if not copy:
            opts["audio_bitrate"] = params.get("bitrate", "128k")
        graph = safe_input(src)["a:0"].output(str(tmp), **opts)
        run(
            compile_cmd(graph),
            source=src,
            duration=probe.get("duration"),
            progress=ctx.progress,
            label="audio",
        )
    return {"audio": audio_facts(final, ext, copied=copy)}
