"""Firing schedules: take each due tick, find the inputs, probe them, submit their DAGs.

The schedules themselves (model, store, tick arithmetic) are the engine's
(pipeline/schedules.py, pipeline/cron.py); what a tick does with a preset and media
files is the application's, so it lives here. A worker box runs ``run_scheduler`` in a
thread (mediajobs composes it into the node), ``mediapipe schedule run`` in the
foreground; claim_tick keeps each tick to one firing however many run.

    from mediajobs.schedule_firing import Scheduler, run_scheduler
    Scheduler(client).tick()   # or run_scheduler(client, stop_event) in a thread
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from mediajobs.schedule_results import Firing, SubmittedInput
from mediajobs.schedule_s3 import fire_s3
from pipeline.client import Client
from pipeline.schedules import Clock, Schedule, Schedules
from workers.wire import MAX_MESSAGE, dag_from_wire, dag_to_wire

if TYPE_CHECKING:  # planning loads the media stages (libvips, PyAV): only the child needs them
    from mediajobs.planning import Outcome

log = logging.getLogger("mediapipe.schedules")

_EVENTS_MAXLEN = 100_000  # as EVENTS_GLOBAL in pipeline/scripts/includes/common.lua


class Scheduler:
    """Fires due schedules. Safe to run in any number of processes at once."""

    def __init__(self, client: Client, *, clock: Clock | None = None) -> None:
        """``clock``: epoch seconds; Redis' ``TIME`` unless given (as the store's)."""
        self.client = client
        self.schedules = Schedules(client, clock=clock)
        # (path, size, mtime, inode) -> sha256, so a watched folder is not re-read every tick.
        self._hashes: dict[tuple[str, int, int, int], str] = {}

    def tick(self) -> list[Firing]:
        """Take and fire every schedule's newest due tick; returns the firings this caller won."""
        now = self.schedules.now()
        specs = [s for s in self.schedules.all() if not s.paused]
        fired: list[Firing] = []
        for spec, last in zip(specs, self.schedules.lasts([s.name for s in specs]), strict=True):
            # Before its first tick a schedule counts from its creation: no firing for the past.
            after = spec.created if last is None else max(last, spec.created)
            due = spec.newest_due(after, now)
            if due is None:
                continue
            late = now - due > spec.grace
            fire = not (late and spec.misfire == "skip")
            won = int(
                self.client.scripts.run(
                    "claim_tick", self.client.keys.prefix, spec.name, due, int(fire), spec.id
                )
            )
            if won != 1:
                continue
            try:
                fired.append(self._fire(spec, due, late))
            except Exception as exc:
                # The tick is taken; one broken schedule must not stop the others. A
                # watching schedule retries what it did not submit on its next tick.
                log.exception("schedule %s: firing tick %s failed", spec.name, due)
                fired.append(Firing(spec.name, due, late, error=f"{type(exc).__name__}: {exc}"))
        return fired

    # -- firing ----------------------------------------------------------------
    def _fire(self, spec: Schedule, tick: int, late: bool) -> Firing:
        if spec.path.startswith("s3://"):
            return fire_s3(self.client, self.schedules, self.event, spec, tick, late)
        inputs: list[tuple[Path, str | None]]
        if spec.watch:
            inputs = self._unseen(spec)
            # One key per content: a firing that crashed after submitting, or two firings
            # racing on one file, get the existing DAG back instead of a second one.
            key = f"schedule:{spec.name}"
        else:
            inputs = [(Path(spec.path), None)]  # a single path runs again on every tick
            key = f"schedule:{spec.name}:{tick}"
        if not inputs:
            return Firing(spec.name, tick, late)
        planned = plan_in_child(
            [str(p) for p, _ in inputs],
            spec.preset,
            spec.out,
            priority=spec.priority,
            idempotency_key=key,
        )
        todo = [(p, sha) for p, (_, sha) in zip(planned, inputs, strict=True) if p.dag]
        for p, _ in todo:
            if p.dag is not None and spec.webhook:
                p.dag.webhook = spec.webhook
        results = self.client.submit_many([p.dag for p, _ in todo if p.dag])
        submitted: list[SubmittedInput] = []
        rejected: list[tuple[str, str]] = []
        seen: list[str] = []
        for (p, sha), res in zip(todo, results, strict=True):
            digest = str((p.facts or {}).get("sha256") or sha)
            submitted.append(SubmittedInput(str(p.path), res.dag_id, digest, res.created))
            # Both hashes: the file may have changed between our read and the probe's.
            seen += [h for h in (sha, digest) if h]
            self.event("schedule_submitted", spec, tick, dag=res.dag_id, input=str(p.path))
        for p, (_, sha) in zip(planned, inputs, strict=True):
            if p.dag is None:
                # Unsupported or corrupt content stays seen: retrying it every tick is noise.
                rejected.append((str(p.path), p.error or "rejected"))
                seen += [sha] if sha else []
                self.event("schedule_rejected", spec, tick, input=str(p.path), error=p.error)
        # Marked seen only after the submission: a crash before this point means the next
        # tick submits again, and the idempotency key returns the same DAG.
        if spec.watch and seen:
            self.client.redis.sadd(self.schedules.seen_key(spec.name), *seen)
        return Firing(spec.name, tick, late, tuple(submitted), tuple(rejected))

    def _unseen(self, spec: Schedule) -> list[tuple[Path, str | None]]:
        """Settled files of a watching schedule whose content it has not handled yet."""
        if glob.has_magic(spec.path):
            names = glob.glob(spec.path, recursive=True)
        else:
            # A folder: its direct entries; dot files are usually partial uploads.
            try:
                names = [os.path.join(spec.path, n) for n in os.listdir(spec.path)]
            except FileNotFoundError:
                names = []
            names = [n for n in names if not os.path.basename(n).startswith(".")]
        # mtimes are real file-system time, so settle uses the real clock, not the injected one.
        wall = time.time()
        by_sha: dict[str, Path] = {}
        for name in sorted(names):
            try:
                st = os.stat(name)
            except OSError:
                continue  # gone since the listing
            if not os.path.isfile(name) or wall - st.st_mtime < spec.settle:
                continue
            sha = self._sha256(name, st)
            by_sha.setdefault(sha, Path(name))  # the same content twice: submit it once
        if not by_sha:
            return []
        flags: list[Any] = self.client.redis.smismember(
            self.schedules.seen_key(spec.name), list(by_sha)
        )
        return [(p, sha) for (sha, p), f in zip(by_sha.items(), flags, strict=True) if not f]

    def _sha256(self, name: str, st: os.stat_result) -> str:
        from stages.output import sha256_of

        key = (name, st.st_size, st.st_mtime_ns, st.st_ino)
        sha = self._hashes.get(key)
        if sha is None:
            if len(self._hashes) > 100_000:
                self._hashes.clear()
            sha = self._hashes[key] = sha256_of(name)
        return sha

    def event(self, ev: str, spec: Schedule, tick: int, **extra: str | None) -> None:
        fields_: dict[Any, Any] = {
            "ev": ev,
            "dag": "",
            "job": "",
            "schedule": spec.name,
            "tick": str(tick),
        }
        fields_.update({k: v for k, v in extra.items() if v is not None})
        self.client.redis.xadd(
            self.client.keys.events, fields_, maxlen=_EVENTS_MAXLEN, approximate=True
        )


# -- probing out of process --------------------------------------------------------------
# Planning probes each input: libvips, PyAV and a first-frame decode of untrusted files. A
# scheduler runs in a worker node, whose process holds the lease of every running job, so a
# decoder crash there would take them all down. The probes run in a child process instead,
# which answers in JSON (workers/wire.py: never a pickle from the side that decodes); the
# DAGs are rebuilt and validated here.
PROBE_TIMEOUT = 120.0  # seconds per input, as the probe stage's own timeout


def plan_in_child(
    paths: list[str], preset: str, out: str, *, priority: int, idempotency_key: str
) -> list[Outcome]:
    """``mediajobs.planning.plan`` run in a child process. An input whose probe crashes or hangs
    the child is rejected with that reason; the others are planned as usual."""
    from mediajobs.planning import Outcome, OutcomeStatus

    args = (preset, out, priority, idempotency_key)
    answer = _plan_child_run(paths, args)
    if not isinstance(answer, str):
        return answer
    if len(paths) == 1:
        return [
            Outcome(
                Path(paths[0]),
                Path(out),
                error=f"{paths[0]}: {answer}",
                status=OutcomeStatus.REJECTED,
            )
        ]
    # Find the input that crashed it: each one alone.
    planned: list[Outcome] = []
    for path in paths:
        alone = _plan_child_run([path], args)
        if isinstance(alone, str):
            alone = [
                Outcome(
                    Path(path), Path(out), error=f"{path}: {alone}", status=OutcomeStatus.REJECTED
                )
            ]
        planned += alone
    return planned


def _plan_child_run(paths: list[str], args: tuple[str, str, int, str]) -> list[Outcome] | str:
    """The child's plans, or why there are none (it crashed, or ran out of time)."""
    ctx = multiprocessing.get_context("forkserver")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_plan_child, args=(child_conn, paths, *args), daemon=True)
    proc.start()
    child_conn.close()
    try:
        if parent_conn.poll(PROBE_TIMEOUT * len(paths)):
            with contextlib.suppress(EOFError):
                answer = parent_conn.recv_bytes(MAX_MESSAGE)
                try:
                    return _plans_from_wire(paths, json.loads(answer))
                except (ValueError, KeyError, TypeError, AttributeError):
                    return "the probing process sent a malformed answer; not submitted"
        else:
            proc.kill()
        proc.join(5)
        code = proc.exitcode
        if code is not None and code < 0:
            return f"the probe crashed ({signal.Signals(-code).name}); not submitted"
        return f"the probe crashed or timed out (exit code {code}); not submitted"
    finally:
        parent_conn.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)


def _plan_child(
    conn: Connection, paths: list[str], preset: str, out: str, priority: int, key: str
) -> None:
    from mediajobs.planning import plan

    planned = plan(paths, preset, out, priority=priority, idempotency_key=key)
    doc = [
        {
            "path": str(p.path),
            "out_dir": str(p.out_dir),
            "facts": p.facts,
            "error": p.error,
            "status": p.status,
            "dag": dag_to_wire(p.dag) if p.dag is not None else None,
        }
        for p in planned
    ]
    conn.send_bytes(json.dumps(doc, default=str).encode())


def _plans_from_wire(paths: list[str], doc: Any) -> list[Outcome]:
    """The child's answer, checked: one plan per input asked for, in order."""
    from mediajobs.planning import Outcome, OutcomeStatus

    if not isinstance(doc, list) or [d["path"] for d in doc] != paths:
        raise ValueError("the probing child answered for other inputs than it was given")
    return [
        Outcome(
            Path(d["path"]),
            Path(str(d["out_dir"])),
            facts=dict(d["facts"]) if d.get("facts") is not None else None,
            dag=dag_from_wire(d["dag"]) if d.get("dag") is not None else None,
            error=None if d.get("error") is None else str(d["error"]),
            status=OutcomeStatus(d.get("status", "pending")),
        )
        for d in doc
    ]


def run_scheduler(
    client: Client,
    stop_event: threading.Event,
    interval: float = 1.0,
    *,
    clock: Clock | None = None,
) -> None:
    """Fire due schedules every ``interval`` seconds until ``stop_event`` is set.

    Meant for a thread in every worker node: running it in many places is what keeps the
    schedules firing while nodes come and go, and claim_tick keeps each tick to one firing.
    """
    scheduler = Scheduler(client, clock=clock)
    down_since: float | None = None  # one line when Redis goes, one when it is back
    while not stop_event.is_set():
        try:
            fired = scheduler.tick()
            if down_since is not None:
                log.info("scheduler: Redis is back after %.1fs", time.monotonic() - down_since)
                down_since = None
            for f in fired:
                log.info(
                    "schedule %s fired tick %s%s: %d submitted, %d rejected",
                    f.schedule,
                    f.tick,
                    " (late)" if f.late else "",
                    len(f.submitted),
                    len(f.rejected),
                )
        except redis.RedisError as exc:
            if down_since is None:
                down_since = time.monotonic()
                log.warning("scheduler: Redis unavailable (%s); trying again", exc)
            else:
                log.debug("scheduler: Redis still unavailable (%s)", exc)
        except Exception:
            log.exception("scheduler: tick failed; trying again")  # keep the loop alive
        stop_event.wait(interval)
