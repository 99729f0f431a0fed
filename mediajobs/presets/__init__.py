"""Presets: what to make of an input, as data (TOML), turned into a DAG.

A preset names its kind (image or video) and has one table per stage with that stage's
params; a stage whose table is absent is not run. Every table is checked against what its
stage accepts (``schema.STAGE_KEYS``), and where outputs go is never a preset's to say.
``auto`` picks the image or the video preset from the probe's kind. A few keys sit at the
top of a preset and apply to all its stages (``schema.PRESET_KEYS``: ``keep_metadata``).
How stages depend on
each other is fixed here, so a preset cannot build a DAG that waits for something that
never comes.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mediajobs.presets.schema import PRESET_KEYS, validate_preset_key, validate_stage
from pipeline.breaker import service_name
from pipeline.errors import SubmissionError
from pipeline.model import Dag, EdgePolicy
from stages.output import output_name

BUILTIN = ("image", "video")

# stage -> the stages it needs (their results arrive as inputs)
NEEDS: dict[str, tuple[str, ...]] = {
    "image_renditions": ("probe",),
    "video_ladder": ("probe",),
    "video_poster": ("probe",),
    "video_sprite": ("probe",),
    "audio_extract": ("probe",),
    "hls_package": ("video_ladder",),
}
# Without these the DAG has failed; the others are extras the manifest reports as failed.
ESSENTIAL = frozenset({"probe", "image_renditions", "video_ladder"})
STAGES_BY_KIND = {
    "image": ("image_renditions",),
    "video": ("video_ladder", "hls_package", "video_poster", "video_sprite", "audio_extract"),
}


def load(preset: str, kind: str | None = None, input_path: str | None = None) -> dict[str, Any]:
    """A preset by name (image, video, auto) or TOML file path. ``auto`` needs the input's
    ``kind``, and its path to name the file when no preset fits (an audio-only file)."""
    if preset == "auto":
        if kind not in BUILTIN:
            raise SubmissionError(
                f"{input_path or 'preset auto'}: no preset for media of kind {kind!r}"
                " (preset auto renders images and videos)"
            )
        preset = str(kind)
    if preset in BUILTIN:
        text = resources.files(__package__).joinpath(f"{preset}.toml").read_text()
        source = preset
    else:
        path = Path(preset)
        if not path.is_file():
            raise SubmissionError(
                f"preset {preset!r}: not a built-in preset ({', '.join(BUILTIN)}, auto) nor a file"
            )
        text, source = path.read_text(), str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SubmissionError(f"preset {source}: invalid TOML ({exc})") from None
    validate(data, source)
    data.setdefault("name", Path(source).stem)
    return data


def checked(preset: str) -> str:
    """``preset`` as a schedule stores it, loaded once to check it: a built-in or ``auto``
    by name, a file by its absolute path (a scheduler may run in another folder)."""
    if preset == "auto":
        return preset
    load(preset)
    return preset if preset in BUILTIN else os.path.abspath(preset)


def validate(data: dict[str, Any], source: str) -> None:
    """A SubmissionError naming ``source`` and the key at fault, unless every table and key
    is one its stage accepts, with a value of the right type and range."""
    kind = data.get("kind")
    if kind not in STAGES_BY_KIND:
        raise SubmissionError(f"preset {source}: kind must be image or video")
    unknown = set(data) - {"name", "kind", *PRESET_KEYS, *NEEDS}
    if unknown:
        raise SubmissionError(f"preset {source}: unknown table(s) {', '.join(sorted(unknown))}")
    name = data.get("name", "")
    if not isinstance(name, str) or len(name) > 100 or not name.isprintable():
        raise SubmissionError(f"preset {source}: name must be a line of at most 100 characters")
    for key in sorted(set(data) & set(PRESET_KEYS)):
        validate_preset_key(source, kind, key, data[key])
    for stage in sorted(set(data) & set(NEEDS)):
        if stage not in STAGES_BY_KIND[kind]:
            raise SubmissionError(f"preset {source}: [{stage}] does not apply to kind {kind}")
        validate_stage(source, stage, data[stage])


def build_dag(
    input_path: str,
    out_dir: str,
    preset: dict[str, Any],
    *,
    name: str | None = None,
    priority: int = 0,
    idempotency_key: str | None = None,
    storage: str | None = None,
    endpoint: str | None = None,
) -> Dag:
    """probe -> the preset's stages -> manifest, for one input.

    With ``storage`` (``s3://bucket/prefix``) every stage that writes outputs publishes
    them there under ``<name>/`` and the jobs carry the storage service's name, so the
    worker asks its circuit breaker before starting them.
    """
    validate(preset, str(preset.get("name")))  # a preset built in code, not loaded
    kind = preset["kind"]
    stem = output_name(name or Path(input_path).stem)
    dag = Dag(
        idempotency_key=idempotency_key,
        meta={"input": input_path, "out_dir": out_dir, "preset": preset["name"]},
    )
    common: dict[str, Any] = {"input": input_path, "out_dir": out_dir, "name": stem}
    shared = {k: preset[k] for k in PRESET_KEYS if k in preset}
    if storage:
        common.update(storage=storage, service=service_name(storage, endpoint))
        if endpoint:
            common["endpoint"] = endpoint
    dag.add("probe", "probe", {"input": input_path}, priority=priority)
    wanted = [s for s in STAGES_BY_KIND[kind] if s in preset]
    if not any(s in ESSENTIAL for s in wanted):
        raise SubmissionError(
            f"preset {preset['name']}: needs a "
            f"{'image_renditions' if kind == 'image' else 'video_ladder'} "
            "table"
        )
    for s in wanted:
        needs = [n for n in NEEDS[s] if n == "probe" or n in wanted]
        # ``common`` last: where a stage reads and writes is never the preset's to say.
        dag.add(s, s, {**preset[s], **shared, **common}, after=needs, priority=priority)
    edges = {
        s: EdgePolicy.FAIL if s in ESSENTIAL else EdgePolicy.CONTINUE for s in ["probe", *wanted]
    }
    dag.add(
        "manifest", "manifest", {**common, "preset": preset["name"]}, after=edges, priority=priority
    )
    return dag
