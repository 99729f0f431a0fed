"""audio_extract: the soundtrack as its own file (AAC in .m4a, or Opus in .opus).

AAC input is copied, not re-encoded (no generation loss, no CPU). A video without audio
is not an error: the stage reports that there was nothing to extract. The source's tags
(title, location, handler names, chapters) are dropped unless the preset keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PermanentError
from stages.contract import media_stage
from stages.ffmpeg_run import compile_cmd, run, safe_input, strip_metadata
from stages.media_facts import audio_facts
from stages.output import atomic_output, output_name, output_path
from stages.params import bitrate, boolean, one_of, param

CODECS = {"aac": ("aac", "m4a", "ipod"), "opus": ("libopus", "opus", "opus")}


@dataclass(frozen=True)
class AudioParams:
    codec: str = param("aac", one_of(*CODECS), "AAC is copied when the source has it")
    bitrate: str = param("128k", bitrate, "when it is encoded")
    keep_metadata: bool = param(False, boolean, "keep the source's tags")


@media_stage(
    "audio_extract",
    params=AudioParams,
    needs=("probe",),
    outputs=("audio",),
    kinds=("video",),
    timeout=1800,
)
def audio_extract(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    probe = inputs["probe"]
    src = params["input"]
    if not probe.get("audio"):
        return {"audio": None, "reason": "no audio stream"}
    codec = params["codec"]
    if codec not in CODECS:  # a job submitted without the catalog's check
        raise PermanentError(f"audio codec {codec!r} not supported (use aac or opus)")
    encoder, ext, muxer = CODECS[codec]
    name = output_name(params.get("name") or Path(src).stem)
    final = output_path(params["out_dir"], f"{name}_audio.{ext}")
    copy = codec == "aac" and probe["audio"][0]["codec"] == "aac"
    with atomic_output(final) as tmp:
        opts: dict[str, Any] = {
            "acodec": "copy" if copy else encoder,
            "f": muxer,
            **strip_metadata(bool(params["keep_metadata"])),
        }
        if not copy:
            opts["audio_bitrate"] = params["bitrate"]
        graph = safe_input(src)["a:0"].output(str(tmp), **opts)
        run(
            compile_cmd(graph),
            source=src,
            duration=probe.get("duration"),
            progress=ctx.progress,
            label="audio",
        )
    return {"audio": audio_facts(final, ext, copied=copy)}
