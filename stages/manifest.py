"""manifest: the root of every media DAG. It receives every child's result and writes
``manifest.json``: the input's facts, every output with its facts, and each stage's
state, attempt and run time."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.contract import media_stage
from stages.output import atomic_output, file_facts, output_path, sweep_dag_temps
from stages.outputs import iter_outputs
from stages.params import line, param

# What every output entry says, in this order (the CLI's --json uses the same fields).
OUTPUT_FIELDS = ("path", "kind", "format", "width", "height", "duration", "bytes", "sha256")


@dataclass(frozen=True)
class ManifestParams:
    preset: str | None = param(None, line, "the preset's name, recorded in the manifest")


# Every other job's result arrives here (``collects``), by job name: their outputs are
# found under every key some stage declared (stages/outputs.py), whatever the stage.
@media_stage(
    "manifest",
    params=ManifestParams,
    outputs=("manifest",),
    collects=True,
    timeout=300,
    reads_input=False,
)
def manifest(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    out_dir = Path(params["out_dir"])
    # Every other job of the DAG has finished: what any of their attempts left here (a
    # worker killed with SIGKILL removes nothing) is garbage now.
    sweep_dag_temps(out_dir, ctx.job.dag_id)
    probe = inputs.get("probe", {})
    outputs: list[dict[str, Any]] = []
    stages: dict[str, dict[str, Any]] = {}
    for name in sorted(inputs):
        result = inputs[name]
        outputs += [{"stage": name, **item} for item in iter_outputs(result)]
        info = result.get("stage_info", {}) if isinstance(result, dict) else {}
        stages[name] = {"state": "completed", **info}
        if isinstance(result, dict) and result.get("reason"):
            stages[name]["note"] = result["reason"]
    for name, error in sorted(ctx.job.failures.items()):
        stages[name] = {
            "state": "failed",
            "error": f"{error.get('type')}: {error.get('message')}",
            "attempt": error.get("attempt"),
        }
    doc = {
        "input": {
            k: probe.get(k)
            for k in (
                "path",
                "kind",
                "container",
                "codec",
                "width",
                "height",
                "rotation",
                "duration",
                "fps",
                "pixels",
                "bytes",
                "sha256",
                "audio",
            )
            if k in probe
        },
        "preset": params.get("preset"),
        "outputs": [
            {k: o.get(k) for k in ("path", "stage", *OUTPUT_FIELDS[1:])} | _extra(o)
            for o in outputs
        ],
        "stages": stages,
        "dag_id": ctx.job.dag_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    final = output_path(out_dir, "manifest.json")
    with atomic_output(final) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return {
        "manifest": file_facts(final),
        "outputs": doc["outputs"],
        "failed_stages": sorted(ctx.job.failures),
    }


def _extra(o: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "rung",
        "fps",
        "frames",
        "video_codec",
        "audio_codec",
        "at",
        "every",
        "columns",
        "rows",
        "variants",
    )
    return {k: o[k] for k in keep if o.get(k) is not None}
