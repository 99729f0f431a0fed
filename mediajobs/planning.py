"""Planning an input: probed here, then turned into a DAG by its preset, or rejected with
one line that names it. ``mediapipe submit`` and the schedule firing both plan this way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mediajobs import presets
from mediajobs.remote_plan import remote_dag
from mediajobs.staging import Stage, stage_input
from pipeline.errors import MediapipeError
from pipeline.model import Dag
from stages.inputs import is_remote, url_problem
from stages.limits import MediaLimits
from stages.outbound import shown_url
from stages.output import output_name
from stages.probe import probe


class OutcomeStatus(StrEnum):
    PENDING = "pending"  # outcomes, not submitted yet
    REJECTED = "rejected"  # refused before anything was queued (missing, bad media, preset)
    SUBMITTED = "submitted"  # queued; not followed (fleet mode without waiting)
    COMPLETED = "completed"
    FAILED = "failed"  # the DAG failed or was cancelled while processing
    INTERRUPTED = "interrupted"  # Ctrl-C: this run's DAGs were cancelled
    UNKNOWN = "unknown"  # Redis went away before the DAG's end was known


@dataclass
class Outcome:
    """One input on its way: rejected (error) or turned into a DAG, and how that ended."""

    path: Path
    out_dir: Path
    facts: dict[str, Any] | None = None
    dag: Dag | None = None
    error: str | None = None
    dag_id: str | None = None
    status: OutcomeStatus = OutcomeStatus.PENDING
    outputs: list[dict[str, Any]] = field(default_factory=list)
    manifest: str | None = None
    # The error is the whole submission's (a bad --preset), the same for every input:
    # said once, not once per input.
    submission_error: bool = False
    # Staged (mediajobs.staging): the input's URI, and for a local --out where the
    # workers published the outputs and the folder they are fetched into.
    uri: str | None = None  # an input only the workers read (s3://): probed there
    staged: str | None = None
    uploaded: bool = False
    fetch_from: str | None = None
    fetch_to: Path | None = None

    @property
    def label(self) -> str:
        return self.path.name


def plan(
    paths: list[str],
    preset: str,
    out: str,
    *,
    priority: int = 0,
    idempotency_key: str | None = None,
    endpoint: str | None = None,
    stage: Stage | None = None,
    progress: Callable[[str, int], Callable[[int, int], None] | None] | None = None,
    hold: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """Probe each input here and build its DAG. ``out`` is a folder, or ``s3://bucket/prefix``
    for object storage (each input's outputs under ``<prefix>/<name>/``). With ``stage``
    each input is uploaded there and the DAG reads it from the store; a local ``out`` is
    then where the outputs are fetched back to (``mediajobs.staging``), each object
    ``hold(uri)`` first (``mediajobs.staged_inputs``)."""
    limits = MediaLimits.from_env()
    used: set[str] = set()
    remote_out = out.startswith("s3://")
    storage = out if remote_out else (stage.renders if stage else None)
    out_root = Path("scratch") if storage else Path(out)
    outcomes = [Outcome(Path(raw), _unique_dir(out_root, _stem(raw), used)) for raw in paths]
    for item, raw in zip(outcomes, paths, strict=True):
        if is_remote(raw):
            item.uri = raw
            problem = url_problem(raw) if raw.startswith(("http://", "https://")) else None
            if problem:
                item.error, item.status = f"{shown_url(raw)}: {problem}", OutcomeStatus.REJECTED
    if stage is not None and not remote_out:
        for item in outcomes:
            item.fetch_to = Path(out) / item.out_dir.name
            item.fetch_from = f"{storage}/{item.out_dir.name}"
    try:
        # A named preset is checked once, before any input is probed or queued: a bad
        # key rejects the whole submission, not each input after the others were queued.
        fixed = None if preset == "auto" else presets.load(preset)
    except MediapipeError as exc:
        for item in outcomes:
            item.error, item.status = str(exc), OutcomeStatus.REJECTED
            item.submission_error = True
        return outcomes
    for item in outcomes:
        path, out_dir = item.path, item.out_dir
        name = out_dir.name
        if item.uri is not None:
            if item.status is OutcomeStatus.REJECTED:
                continue
            try:
                item.dag = remote_dag(
                    item.uri,
                    str(out_dir.resolve()),
                    preset if preset in ("auto", *presets.BUILTIN) or fixed is None else fixed,
                    name=name,
                    priority=priority,
                    idempotency_key=f"{idempotency_key}:{item.uri}" if idempotency_key else None,
                    storage=storage,
                    endpoint=endpoint,
                )
            except MediapipeError as exc:
                item.error, item.status = str(exc), OutcomeStatus.REJECTED
            continue
        try:
            item.facts = probe(path, limits)
            chosen = fixed or presets.load(preset, item.facts["kind"], str(path))
            key = f"{idempotency_key}:{item.facts['sha256']}" if idempotency_key else None
            source = str(path.resolve())
            if stage is not None:
                show = progress(path.name, item.facts["bytes"]) if progress else None
                item.staged, item.uploaded = stage_input(
                    path, item.facts["sha256"], stage, show, hold
                )
                source = item.staged
            item.dag = presets.build_dag(
                source,
                str(out_dir.resolve()),
                chosen,
                name=name,
                priority=priority,
                idempotency_key=key,
                storage=storage,
                endpoint=endpoint,
                input_sha256=item.facts["sha256"] if stage is not None else None,
            )
        except MediapipeError as exc:
            item.error, item.status = str(exc), OutcomeStatus.REJECTED
    return outcomes


def _stem(raw: str) -> str:
    """The name an input's outputs are named after: a URL's file name, query left out."""
    return Path(urlsplit(raw).path).stem if is_remote(raw) else Path(raw).stem


def _unique_dir(root: Path, stem: str, used: set[str]) -> Path:
    """The input's own folder under ``root``: its stem made a safe name (``output_name``),
    with "-2", "-3"... for a name already taken in this submission. Names are compared
    case-folded, so two inputs never share a folder on a case-insensitive filesystem."""
    base = output_name(stem)
    name, n = base, 1
    while name.casefold() in used:
        n += 1
        name = f"{base}-{n}"
    used.add(name.casefold())
    return root / name
