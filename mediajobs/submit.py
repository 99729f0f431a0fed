"""The submit use case: from file paths to finished renditions (``run``), one ``Outcome``
per input; ``mediapipe submit`` parses its options, calls ``run`` and prints.

Each input is checked on this machine first (exists, is a file, probes as supported
media), so a bad input is rejected before anything is queued (``REJECTED``, exit code 2).
The good ones become one DAG each. In embedded mode a worker pool sized to the cores runs
in this process (mediajobs/worker_box.py) while the progress shows, until every DAG has
finished; in fleet mode the DAGs are submitted, and followed when asked to wait.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from mediajobs.json_documents import SCHEMA
from mediajobs.planning import Outcome, OutcomeStatus, plan
from mediajobs.progress_view import ProgressView, follower
from mediajobs.remote_plan import LOCATE
from mediajobs.staged_inputs import StagedInputs, sweep
from mediajobs.staging import Stage, fetch_outputs, upload_progress
from mediajobs.worker_box import BoxSpec, WorkerBox, assemble
from pipeline.client import TERMINAL_DAG_STATES, Client
from pipeline.connection import resolve_url
from pipeline.errors import ExitCode, RedisUnavailableError
from pipeline.outage import REDIS_DOWN, Outage
from pipeline.replies import as_str
from stages.manifest import OUTPUT_FIELDS

log = logging.getLogger("mediapipe.submit")


@dataclass(frozen=True)
class SubmitOptions:
    preset: str = "auto"  # auto, image, video or a preset file
    out: str = "mediapipe-out"  # a folder, or s3://bucket/prefix
    endpoint: str | None = None  # S3-compatible endpoint
    priority: int = 0
    idempotency_key: str | None = None
    url: str | None = None  # a fleet's Redis; None: the embedded server and a local pool
    namespace: str = "mp"
    # Follow the DAGs to their end. None: the mode's default (embedded: run them here and
    # wait; fleet: return once queued). False in embedded mode: queue them on the embedded
    # server and return; a `mediapipe worker` run later (or elsewhere on it) runs them.
    wait: bool | None = None
    concurrency: int | None = None  # the local pool's size (default: the CPU cores)
    metrics_port: int | None = None  # the local pool's /metrics
    quiet: bool = False  # no progress view
    webhook: str | None = None  # where each DAG's end is announced (docs/webhooks.md)
    # s3://bucket/prefix: inputs uploaded there for a fleet that cannot read this disk;
    # a local --out is then fetched back from the store (mediajobs.staging).
    stage: str | None = None


class Reporter(Protocol):
    """What the caller shows while ``run`` goes (the CLI prints on stderr)."""

    def rejected(self, outcome: Outcome) -> None: ...

    def refused(self, message: str) -> None:
        """The whole submission was refused (a bad --preset): said once for all inputs."""

    def following(self, outcome: Outcome) -> None: ...


class RedisLost(RedisUnavailableError):
    """Redis went away during ``run``: the outcomes as far as known (submitted DAGs are
    ``UNKNOWN``: they may still run, and ``mediapipe watch`` re-attaches)."""

    def __init__(self, message: str, outcomes: list[Outcome]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


def run(paths: list[str], options: SubmitOptions, report: Reporter) -> list[Outcome]:
    """Plan, submit and (embedded, or asked to wait) follow every input to its end.
    Raises ``RedisLost`` when Redis goes away; Ctrl-C ends in ``INTERRUPTED`` outcomes."""
    outcomes: list[Outcome] = []
    ledger: StagedInputs | None = None
    try:
        stage = Stage.parse(options.stage, options.endpoint) if options.stage else None
        client: Client | None = None
        if stage is not None:
            # Staged inputs are held in Redis before they are looked for in the store, so
            # retention never deletes one between that look and the DAG that uses it.
            client = _connect(options)
            ledger = StagedInputs(client)
        outcomes = plan(
            paths,
            options.preset,
            options.out,
            priority=options.priority,
            idempotency_key=options.idempotency_key,
            endpoint=options.endpoint,
            stage=stage,
            progress=upload_progress,
            hold=ledger.holder(options.endpoint) if ledger else None,
        )
        refused = [o.error for o in outcomes if o.error and o.submission_error]
        if refused:
            report.refused(refused[0])
        for o in outcomes:
            if o.error and not o.submission_error:
                report.rejected(o)
        if client is None:
            client = _connect(options)
        submit_all(client, outcomes, webhook=options.webhook)
        if ledger is not None:
            ends = options.endpoint
            ledger.use((o.staged, ends, o.dag_id) for o in outcomes if o.staged and o.dag_id)
        if options.wait is False:
            return outcomes
        if options.url is None:
            finished = run_embedded(
                client,
                outcomes,
                url=resolve_url(None),
                namespace=options.namespace,
                concurrency=options.concurrency,
                quiet=options.quiet,
                metrics_port=options.metrics_port,
            )
        elif options.wait is True:
            for o in outcomes:
                if o.dag_id:
                    report.following(o)
            outage = Outage()
            client = follower(options.url, options.namespace, outage)
            finished = follow(client, outcomes, quiet=options.quiet, outage=outage)
        else:
            return outcomes
        if not finished:
            for o in outcomes:
                if o.dag_id:
                    o.status = OutcomeStatus.INTERRUPTED
            return outcomes
        Outage().call(lambda: collect(client, outcomes))
        fetch_back(outcomes, options.endpoint)
        if ledger is not None:
            sweep_own(client, outcomes, options.endpoint)
    except (RedisUnavailableError, redis.ConnectionError, redis.TimeoutError) as exc:
        # A transition that lost Redis raises redis' own errors: the same outage.
        message = f"Redis unreachable: {exc}"
        if isinstance(exc, RedisUnavailableError):
            message = str(exc)
        for o in outcomes:
            if o.dag_id:
                o.status = OutcomeStatus.UNKNOWN
        raise RedisLost(message, outcomes) from None
    finally:
        if ledger is not None and ledger.held:
            # Planning or the submit failed: the holds end now (an upload no DAG uses is
            # deleted by the next sweep), not a day later.
            with contextlib.suppress(Exception):
                ledger.use(())
    return outcomes


def _connect(options: SubmitOptions) -> Client:
    if options.wait is True and options.url is not None:
        # A fleet submit that waits rides out an outage from its first call (a Sentinel
        # failover under way, a restart). The submit itself is then resent with its
        # request ids (pipeline.scripts), so it is written once.
        return Outage().call(_connect_or_down, options.url, options.namespace)
    return Client.connect(options.url, namespace=options.namespace)


def sweep_own(client: Client, outcomes: list[Outcome], endpoint: str | None) -> None:
    """Once this submit's DAGs ended, delete its staged inputs that no other DAG still
    uses (and that ``MEDIAPIPE_STAGE_RETENTION`` lets go now); the workers' sweeps do it
    otherwise. A store that fails here is no failure of the submit."""
    uris = {(o.staged, endpoint) for o in outcomes if o.staged and o.dag_id}
    if not uris:
        return
    try:
        done, _ = sweep(client, uris=sorted(uris, key=str))
    except Exception as exc:  # Redis or the store: the workers' sweeps try again
        log.debug("staged inputs not swept here: %s", exc)
        return
    if done.error:
        log.debug("staged inputs not swept here: %s", done.error)


def _connect_or_down(url: str, namespace: str) -> Client:
    """``Client.connect``, its unreachable server raised as the outage it is (a refused
    password or a bad URL stays the error it is)."""
    try:
        return Client.connect(url, namespace=namespace)
    except RedisUnavailableError as exc:
        cause = exc.__cause__
        if isinstance(cause, REDIS_DOWN) and not isinstance(cause, redis.AuthenticationError):
            raise cause from None  # said as the outage's notice says it
        raise


def submit_all(client: Client, outcomes: list[Outcome], *, webhook: str | None = None) -> None:
    todo = [p for p in outcomes if p.dag is not None]
    for p in todo:
        if p.dag is not None and webhook:
            p.dag.webhook = webhook
    for p, sub in zip(todo, client.submit_many([p.dag for p in todo if p.dag]), strict=True):
        p.dag_id, p.status = sub.dag_id, OutcomeStatus.SUBMITTED


def collect(client: Client, outcomes: list[Outcome]) -> None:
    """Read each finished DAG's outcome: the outputs its manifest listed, or its first error."""
    for p in outcomes:
        if p.dag_id is None or p.dag is None:
            continue
        state = client.dag_state(p.dag_id) or "unknown"
        p.status = (
            OutcomeStatus.COMPLETED
            if state == "completed"
            else (OutcomeStatus.FAILED if state in TERMINAL_DAG_STATES else OutcomeStatus.UNKNOWN)
        )
        manifest = client.job(p.dag.job_id("manifest")) or {}
        result = manifest.get("result") if state == "completed" else None
        if isinstance(result, dict):
            p.outputs = [{k: o.get(k) for k in OUTPUT_FIELDS} for o in result.get("outputs", [])]
            p.manifest = result.get("manifest", {}).get("path")
        elif state != "completed":
            p.error = _first_error(client, p.dag_id) or f"DAG {state}"
            if p.uri is not None and _refused_where_probed(client, p.dag.job_id(LOCATE)):
                p.status = OutcomeStatus.REJECTED  # bad media, found on a worker: exit 2


def fetch_back(outcomes: list[Outcome], endpoint: str | None) -> None:
    """Download the outputs of each completed, staged DAG into its local folder and point
    its outcome at the local files."""
    for p in outcomes:
        if p.status is not OutcomeStatus.COMPLETED or not p.fetch_from or p.fetch_to is None:
            continue
        fetch_outputs(p.fetch_from, p.fetch_to, endpoint)
        prefix = p.fetch_from.rstrip("/") + "/"
        for o in p.outputs:
            path = str(o.get("path") or "")
            if path.startswith(prefix):
                o["uri"], o["path"] = path, str(p.fetch_to / path[len(prefix) :])
        if p.manifest and p.manifest.startswith(prefix):
            p.manifest = str(p.fetch_to / p.manifest[len(prefix) :])


# What the probe of an input only the workers read can say of the input itself: it is
# bad media, refused by the URL policy, or not there (a missing object): exit 2.
REFUSED_INPUT = frozenset({"BadInputError", "OutboundRefusedError", "PermanentError"})


def _refused_where_probed(client: Client, job_id: str) -> bool:
    job = client.job(job_id) or {}
    err = job.get("error")
    dead = job.get("state") == "dead" and isinstance(err, dict)
    return dead and isinstance(err, dict) and err.get("type") in REFUSED_INPUT


def _first_error(client: Client, dag_id: str) -> str | None:
    for job in client.jobs(dag_id).values():
        err = job.get("error")
        if job["state"] == "dead" and isinstance(err, dict):
            return str(err.get("message") or err.get("type"))
    return None


def as_json(o: Outcome) -> dict[str, Any]:
    """The ``--json`` document of one input (docs/json-output.md): status completed,
    failed, submitted (not followed) or unknown (Redis went away), with its DAG id (null
    only for an input rejected before anything was queued), probe facts and outputs."""
    shown = {
        OutcomeStatus.COMPLETED: "completed",
        OutcomeStatus.SUBMITTED: "submitted",
        OutcomeStatus.UNKNOWN: "unknown",
    }.get(o.status, "failed")
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "submitted_input",
        "dag_id": o.dag_id,
        "status": shown,
        "input": {"path": str(o.path), **{k: v for k, v in (o.facts or {}).items() if k != "path"}},
        "outputs": o.outputs,
        "manifest": o.manifest,
    }
    if o.staged:
        doc["input"]["staged"] = {"uri": o.staged, "uploaded": o.uploaded}
    if shown == "failed":
        doc["error"] = o.error or f"DAG ended {o.status}"
    elif shown == "unknown":
        doc["error"] = f"Redis unreachable; re-attach with: mediapipe watch {o.dag_id}"
    return doc


def exit_code(outcomes: list[Outcome]) -> ExitCode:
    statuses = {o.status for o in outcomes}
    if OutcomeStatus.INTERRUPTED in statuses:
        return ExitCode.INTERRUPTED
    if OutcomeStatus.REJECTED in statuses:
        return ExitCode.BAD_INPUT
    if OutcomeStatus.UNKNOWN in statuses:
        return ExitCode.REDIS_UNAVAILABLE
    if statuses - {OutcomeStatus.COMPLETED, OutcomeStatus.SUBMITTED}:
        return ExitCode.FAILED
    return ExitCode.OK


def run_embedded(
    client: Client,
    outcomes: list[Outcome],
    *,
    url: str,
    namespace: str,
    concurrency: int | None = None,
    quiet: bool = False,
    metrics_port: int | None = None,
) -> bool:
    """Run a local worker pool until every submitted DAG finished. False when interrupted."""
    ids = {p.dag_id: p.label for p in outcomes if p.dag_id}
    if not ids:
        return True
    spec = BoxSpec(
        concurrency=concurrency,
        grace=0.0,
        heartbeat=1.0,
        metrics_port=metrics_port,
        use_gpus=False,
        lanes=False,
        schedules=False,
        sweep_staged=False,  # this submit sweeps its own inputs once they ended
    )
    box = assemble(url, namespace, spec)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # The progress view speaks for an outage in one line; the local pool's own
        # lines about it would repeat it (--debug keeps them).
        logging.getLogger("mediapipe.worker").addFilter(_quiet_about_redis)
    thread = threading.Thread(
        target=box.run, kwargs={"install_signals": False}, name="local-worker", daemon=True
    )
    thread.start()
    try:
        with ProgressView(
            client, ids, quiet=quiet, facts=_facts(outcomes), local_pool=True
        ) as view:
            view.run_until_done()
        for line in await_deliveries(client, list(ids)):
            sys.stderr.write(line + "\n")
    except KeyboardInterrupt:
        _interrupt(client, box, thread, outcomes)
        return False
    except RedisUnavailableError:
        # The view gave up on Redis: nothing can be reported any more, so the local pool
        # and its ffmpeg processes stop now instead of rendering for nobody.
        _stop_local(box, thread, outcomes)
        raise
    box.request_stop()
    thread.join(60)
    return True


def await_deliveries(client: Client, dag_ids: list[str], timeout: float = 20.0) -> list[str]:
    """Give the local pool the time to post the webhooks of DAGs that ended (their first
    attempt, not the retries); a line for each one not delivered, saying why and who
    retries it (docs/webhooks.md)."""
    events: dict[str, str] = {}
    for dag_id in dag_ids:
        ev = client.redis.hget(client.keys.dag(dag_id), "webhook_event")
        if ev:
            events[dag_id] = as_str(ev)
    deadline = time.monotonic() + timeout
    pending = dict(events)
    while pending and time.monotonic() < deadline:
        for dag_id, ev in list(pending.items()):
            job = client.job(f"{ev}/deliver") or {}
            if job.get("state") in ("completed", "dead", "delayed", "cancelled", None):
                del pending[dag_id]
        time.sleep(0.05)
    lines = []
    for dag_id, ev in events.items():
        job = client.job(f"{ev}/deliver") or {}
        if job.get("state") == "completed":
            continue
        err = job.get("error") if isinstance(job.get("error"), dict) else {}
        why = f": {err.get('message')}" if err and err.get("message") else ""
        later = (
            "dead-lettered (mediapipe dlq list)"
            if job.get("state") == "dead"
            else "a mediapipe worker on this server delivers it"
        )
        lines.append(f"mediapipe: webhook of {dag_id} not delivered{why}; {later}")
    return lines


def _facts(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    """The probe facts of each submitted input (the view weighs each DAG's stages by them)."""
    return {o.dag_id: o.facts for o in outcomes if o.dag_id and o.facts}


def _quiet_about_redis(record: logging.LogRecord) -> bool:
    return "Redis unreachable" not in record.getMessage()


def follow(
    client: Client, outcomes: list[Outcome], *, quiet: bool = False, outage: Outage | None = None
) -> bool:
    ids = {p.dag_id: p.label for p in outcomes if p.dag_id}
    try:
        with ProgressView(client, ids, quiet=quiet, outage=outage, facts=_facts(outcomes)) as view:
            if outage is not None:
                outage.notice = view.notice
            view.run_until_done()
    except KeyboardInterrupt:
        return False
    return True


def _interrupt(
    client: Client, box: WorkerBox, thread: threading.Thread, outcomes: list[Outcome]
) -> None:
    """Ctrl-C: cancel this run's DAGs, stop the pool now, and sweep temporary files, so
    the output folder holds only finished files; running the command again starts over."""
    sys.stderr.write("\ninterrupted: stopping running jobs...\n")
    for p in outcomes:
        if p.dag_id:
            with contextlib.suppress(Exception):
                client.cancel(p.dag_id)
    _stop_local(box, thread, outcomes)


def _stop_local(box: WorkerBox, thread: threading.Thread, outcomes: list[Outcome]) -> None:
    """Stop the local pool at once (with every process its jobs started) and sweep the
    temporary files its jobs left."""
    box.request_stop()
    box.request_stop()  # a second request: no grace period
    thread.join(30)
    for p in outcomes:
        if p.out_dir.exists():
            for part in p.out_dir.rglob(".*.part*"):
                with contextlib.suppress(OSError):
                    if part.is_dir():
                        shutil.rmtree(part)
                    else:
                        part.unlink()


def summary_lines(outcomes: list[Outcome]) -> list[str]:
    """The table ``submit`` ends with: each input's DAG id (for ``mediapipe status`` and
    ``watch``; ``-`` for one rejected before anything was queued), status, outputs and
    where they are or why not."""
    width = max((len(p.label) for p in outcomes), default=5)
    dag_width = max((len(p.dag_id or "-") for p in outcomes), default=3)
    lines = [
        f"{'input':<{width}}  {'dag':<{dag_width}}  {'status':<9}  {'outputs':>7}  where / why"
    ]
    for p in outcomes:
        status = "completed" if p.status is OutcomeStatus.COMPLETED else "failed"
        where = (p.manifest or str(p.out_dir)) if status == "completed" else (p.error or "")
        dag = p.dag_id or "-"
        lines.append(
            f"{p.label:<{width}}  {dag:<{dag_width}}  {status:<9}  {len(p.outputs):>7}  {where}"
        )
    return lines
