"""Presets: what to make of an input, as data (TOML), turned into a DAG.

A preset names its kind (image or video) and has one table per stage with that stage's
params; a stage whose table is absent is not run. Which stages exist, the kinds they
apply to, what each needs and accepts, and which are essential all come from the stages'
own declarations (``stages.contract.catalog()``): adding a stage adds no line here. Every
table is checked against its stage's declared params, and where outputs go is never a
preset's to say. ``auto`` picks the image or the video preset from the probe's kind. A
few keys sit at the top of a preset and apply to each of its stages that declares them
(``schema.PRESET_KEYS``: ``keep_metadata``). The edges come from the declarations too, so
a preset cannot build a DAG that waits for something that never comes.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import stages  # noqa: F401 - importing the stages declares them in the catalog
from mediajobs.presets.schema import PRESET_KEYS, validate_preset_key
from pipeline.breaker import service_name
from pipeline.errors import SubmissionError
from pipeline.model import Dag, EdgePolicy
from stages.contract import MediaStage, catalog
from stages.output import output_name
from stages.params import line

BUILTIN = ("image", "video")


def _choosable(kind: str | None = None) -> dict[str, MediaStage]:
    """The stages a preset may have a table for (of ``kind``, or of any kind)."""
    return {s.name: s for s in catalog() if s.kinds and (kind is None or kind in s.kinds)}


def _framing() -> tuple[list[MediaStage], MediaStage]:
    """The stages every DAG has: those that run first (the probe) and the collector."""
    first = [s for s in catalog() if not s.kinds and not s.collects]
    last = [s for s in catalog() if not s.kinds and s.collects]
    if len(last) != 1:
        raise SubmissionError(f"{len(last)} collecting stages declared; presets need one")
    return first, last[0]


def kinds() -> list[str]:
    """The kinds of input some declared stage applies to (image, video)."""
    return sorted({k for s in catalog() for k in s.kinds})


def _in_need_order(names: list[str], stages_by_name: dict[str, MediaStage]) -> list[str]:
    """``names`` with each stage after the stages it needs (the preset's order otherwise),
    so every edge names a job already in the DAG."""
    out: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in out or name not in names:
            return
        if name in path:
            raise SubmissionError(f"stages {' -> '.join((*path, name))} need each other")
        for need in stages_by_name[name].needs:
            visit(need, (*path, name))
        out.append(name)

    for n in names:
        visit(n, ())
    return out


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
    if kind not in kinds():
        raise SubmissionError(f"preset {source}: kind must be one of {', '.join(kinds())}")
    every = _choosable()
    unknown = set(data) - {"name", "kind", *PRESET_KEYS, *every}
    if unknown:
        raise SubmissionError(f"preset {source}: unknown table(s) {', '.join(sorted(unknown))}")
    try:
        line(data.get("name", ""))
    except ValueError as exc:
        raise SubmissionError(f"preset {source}: name must be {exc}") from None
    for key in sorted(set(data) & set(PRESET_KEYS)):
        validate_preset_key(source, kind, key, data[key])
    ours = _choosable(kind)
    for name in sorted(set(data) & set(every)):
        if name not in ours:
            raise SubmissionError(f"preset {source}: [{name}] does not apply to kind {kind}")
        ours[name].check(data[name], f"preset {source}: [{name}]", job_keys=False)


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
    input_sha256: str | None = None,
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
    if input_sha256:  # a staged input: workers check their copy against it
        common["input_sha256"] = input_sha256
    shared = {k: preset[k] for k in PRESET_KEYS if k in preset}
    if storage:
        common.update(storage=storage, service=service_name(storage, endpoint))
        if endpoint:
            common["endpoint"] = endpoint
    first, collector = _framing()
    for framing in first:
        fetch: dict[str, Any] = {k: common[k] for k in ("input_sha256", "endpoint") if k in common}
        if input_path.startswith("s3://"):
            # The probe fetches the input: through the input store's breaker.
            fetch["service"] = service_name(input_path, endpoint)
        framing.add_to(dag, {"input": input_path, **fetch}, priority=priority)
    ours = _choosable(kind)
    wanted = _in_need_order([s for s in preset if s in ours], ours)
    if not any(ours[s].essential for s in wanted):
        essential = ", ".join(sorted(n for n, s in ours.items() if s.essential))
        raise SubmissionError(f"preset {preset['name']}: needs a table for one of {essential}")
    for s in wanted:
        entry = ours[s]
        # A preset-wide key goes to the stages that declare it; ``common`` last: where a
        # stage reads and writes is never the preset's to say.
        extra = {k: v for k, v in shared.items() if k in entry.keys}
        entry.add_to(dag, {**preset[s], **extra, **common}, priority=priority)
    edges = {
        s.name: EdgePolicy.FAIL if s.essential or not s.kinds else EdgePolicy.CONTINUE
        for s in [*first, *(ours[w] for w in wanted)]
    }
    collector.add_to(dag, {**common, "preset": preset["name"]}, after=edges, priority=priority)
    return dag
