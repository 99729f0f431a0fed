"""``mediapipe submit``: from file paths to finished renditions.

Each input is checked on this machine first (exists, is a file, probes as supported
media), so a bad input is rejected before anything is queued (exit code 2). The good
ones become one DAG each. In embedded mode the command also runs a worker pool sized to
the cores, shows progress, and returns when every DAG has finished; in fleet mode it
prints the DAG ids, and follows them with --wait.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediajobs import presets
from mediajobs.progress_view import ProgressView
from pipeline.client import TERMINAL_DAG_STATES, Client
from pipeline.errors import MediapipeError, RedisUnavailableError
from pipeline.model import Dag
from pipeline.outage import Outage
from stages.manifest import OUTPUT_FIELDS
from stages.output import output_name

log = logging.getLogger("mediapipe.submit")

EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class Planned:
    """One input on its way: rejected (error) or turned into a DAG."""

    path: Path
    out_dir: Path
    facts: dict[str, Any] | None = None
    dag: Dag | None = None
    error: str | None = None
    dag_id: str | None = None
    status: str = "pending"
    outputs: list[dict[str, Any]] = field(default_factory=list)
    manifest: str | None = None

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
) -> list[Planned]:
    """Probe each input here and build its DAG. ``out`` is a folder, or ``s3://bucket/prefix``
    for object storage (each input's outputs under ``<prefix>/<name>/``)."""
    from stages.limits import MediaLimits
    from stages.probe import probe

    limits = MediaLimits.from_env()
    used: set[str] = set()
    storage = out if out.startswith("s3://") else None
    out_root = Path("scratch") if storage else Path(out)
    planned = [Planned(Path(raw), _unique_dir(out_root, Path(raw).stem, used)) for raw in paths]
    try:
        # A named preset is checked once, before any input is probed or queued: a bad
        # key rejects the whole submission, not each input after the others were queued.
        fixed = None if preset == "auto" else presets.load(preset)
    except MediapipeError as exc:
        for item in planned:
            item.error, item.status = str(exc), "failed"
        return planned
    for item in planned:
        path, out_dir = item.path, item.out_dir
        name = out_dir.name
        try:
            item.facts = probe(path, limits)
            chosen = fixed or presets.load(preset, item.facts["kind"], str(path))
            key = f"{idempotency_key}:{item.facts['sha256']}" if idempotency_key else None
            item.dag = presets.build_dag(
                str(path.resolve()),
                str(out_dir.resolve()),
                chosen,
                name=name,
                priority=priority,
                idempotency_key=key,
                storage=storage,
                endpoint=endpoint,
            )
        except MediapipeError as exc:
            item.error, item.status = str(exc), "failed"
    return planned


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


def submit_all(client: Client, planned: list[Planned]) -> None:
    todo = [p for p in planned if p.dag is not None]
    for p, sub in zip(todo, client.submit_many([p.dag for p in todo if p.dag]), strict=True):
        p.dag_id, p.status = sub.dag_id, "submitted"


def collect(client: Client, planned: list[Planned]) -> None:
    """Read each finished DAG's outcome: the outputs its manifest listed, or its first error."""
    for p in planned:
        if p.dag_id is None or p.dag is None:
            continue
        state = client.dag_state(p.dag_id) or "unknown"
        p.status = (
            "completed"
            if state == "completed"
            else ("failed" if state in TERMINAL_DAG_STATES else state)
        )
        manifest = client.job(p.dag.job_id("manifest")) or {}
        result = manifest.get("result") if state == "completed" else None
        if isinstance(result, dict):
            p.outputs = [{k: o.get(k) for k in OUTPUT_FIELDS} for o in result.get("outputs", [])]
            p.manifest = result.get("manifest", {}).get("path")
        elif state != "completed":
            p.error = _first_error(client, p.dag_id) or f"DAG {state}"


def _first_error(client: Client, dag_id: str) -> str | None:
    for job in client.jobs(dag_id).values():
        err = job.get("error")
        if job["state"] == "dead" and isinstance(err, dict):
            return str(err.get("message") or err.get("type"))
    return None


def as_json(p: Planned) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "dag_id": p.dag_id,
        "status": "completed" if p.status == "completed" else "failed",
        "input": {"path": str(p.path), **{k: v for k, v in (p.facts or {}).items() if k != "path"}},
        "outputs": p.outputs,
    }
    if doc["status"] == "failed":
        doc["error"] = p.error or f"DAG ended {p.status}"
    return doc


def exit_code(planned: list[Planned]) -> int:
    if any(p.dag is None for p in planned):
        return EXIT_REJECTED
    if any(p.status != "completed" for p in planned):
        return EXIT_FAILED
    return EXIT_OK


def run_embedded(
    client: Client,
    planned: list[Planned],
    *,
    url: str,
    namespace: str,
    concurrency: int | None = None,
    quiet: bool = False,
    metrics_port: int | None = None,
) -> bool:
    """Run a local worker pool until every submitted DAG finished. False when interrupted."""
    from workers.node import NodeConfig, WorkerNode

    ids = {p.dag_id: p.label for p in planned if p.dag_id}
    if not ids:
        return True
    node = WorkerNode(
        url,
        config=NodeConfig(
            namespace=namespace,
            concurrency=concurrency,
            preload=("stages",),
            grace=0.0,
            heartbeat=1.0,
            metrics_port=metrics_port,
        ),
    )
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # The progress view speaks for an outage in one line; the local pool's own
        # lines about it would repeat it (--debug keeps them).
        logging.getLogger("mediapipe.worker").addFilter(_quiet_about_redis)
    thread = threading.Thread(
        target=node.run, kwargs={"install_signals": False}, name="local-worker", daemon=True
    )
    thread.start()
    try:
        with ProgressView(client, ids, quiet=quiet) as view:
            view.run_until_done()
    except KeyboardInterrupt:
        _interrupt(client, node, thread, planned)
        return False
    except RedisUnavailableError:
        # The view gave up on Redis: nothing can be reported any more, so the local pool
        # and its ffmpeg processes stop now instead of rendering for nobody.
        _stop_local(node, thread, planned)
        raise
    node.request_stop()
    thread.join(60)
    return True


def _quiet_about_redis(record: logging.LogRecord) -> bool:
    return "Redis unreachable" not in record.getMessage()


def follow(
    client: Client, planned: list[Planned], *, quiet: bool = False, outage: Outage | None = None
) -> bool:
    ids = {p.dag_id: p.label for p in planned if p.dag_id}
    try:
        with ProgressView(client, ids, quiet=quiet, outage=outage) as view:
            if outage is not None:
                outage.notice = view.notice
            view.run_until_done()
    except KeyboardInterrupt:
        return False
    return True


def _interrupt(client: Client, node: Any, thread: threading.Thread, planned: list[Planned]) -> None:
    """Ctrl-C: cancel this run's DAGs, stop the pool now, and sweep temporary files, so
    the output folder holds only finished files; running the command again starts over."""
    sys.stderr.write("\ninterrupted: stopping running jobs...\n")
    for p in planned:
        if p.dag_id:
            with contextlib.suppress(Exception):
                client.cancel(p.dag_id)
    _stop_local(node, thread, planned)


def _stop_local(node: Any, thread: threading.Thread, planned: list[Planned]) -> None:
    """Stop the local pool at once (with every process its jobs started) and sweep the
    temporary files its jobs left."""
    node.request_stop()
    node.request_stop()  # a second request: no grace period
    thread.join(30)
    for p in planned:
        if p.out_dir.exists():
            for part in p.out_dir.rglob(".*.part*"):
                with contextlib.suppress(OSError):
                    if part.is_dir():
                        import shutil

                        shutil.rmtree(part)
                    else:
                        part.unlink()


def summary_lines(planned: list[Planned]) -> list[str]:
    width = max((len(p.label) for p in planned), default=5)
    lines = [f"{'input':<{width}}  {'status':<9}  {'outputs':>7}  where / why"]
    for p in planned:
        status = "completed" if p.status == "completed" else "failed"
        where = (p.manifest or str(p.out_dir)) if status == "completed" else (p.error or "")
        lines.append(f"{p.label:<{width}}  {status:<9}  {len(p.outputs):>7}  {where}")
    return lines
