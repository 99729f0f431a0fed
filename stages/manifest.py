"""manifest: the root of every media DAG. It receives every child's result and writes
``manifest.json``: the input's facts, every output with its facts, and each stage's
state, attempt and run time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline.registry import stage
from stages.output import atomic_output, file_facts, output_path, sweep_dag_temps
from stages.storage import stores_outputs
from stages.timing import reports_timing

# What every output entry says, in this order (the CLI's --json uses the same fields).
OUTPUT_FIELDS = ("path", "kind", "format", "width", "height", "duration", "bytes", "sha256")

# Result keys under which stages return their outputs (a dict or a list of dicts).
OUTPUT_KEYS = ("renditions", "poster", "sprite", "audio", "hls")


def collect_outputs(name: str, result: Any) -> list[dict[str, Any]]:
    if not isinstance(result, dict):
        return []
    found: list[dict[str, Any]] = []
    for key in OUTPUT_KEYS:
        value = result.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "path" in item:
                found.append({"stage": name, **item})
    return found


@stage("manifest", queue="default", cost=1, timeout=300, attempts=3)
@reports_timing
@stores_outputs
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
        outputs += collect_outputs(name, result)
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
