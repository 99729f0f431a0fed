"""The submitting side: submit DAGs, read their state, cancel, retry, pause.

from pipeline.client import Client
from pipeline.model import Dag

dag = Dag()
dag.add("probe", "probe", {"path": "in.mp4"})
dag.add("manifest", "manifest", after=["probe"])
Client.connect().submit(dag)
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from pipeline.connection import connect
from pipeline.errors import SubmissionError
from pipeline.events import Event, read_events
from pipeline.keys import Keys
from pipeline.layout import dag_fields, job_fields
from pipeline.liveness import live_workers
from pipeline.model import Dag
from pipeline.registry import REGISTRY, Registry
from pipeline.replies import as_str, as_str_dict
from pipeline.retention import Pruned, Retention, prune
from pipeline.rollup import DagRollup
from pipeline.routing import live_queues, orphan_queues
from pipeline.scripts import REQUEST_ID, Scripts
from pipeline.submission import (
    PlainJobs,
    encode_batch,
    encode_jobs,
    encode_meta,
    encode_webhook,
    submit_one_fields,
)
from pipeline.worker_beat import WorkerBeat

TERMINAL_DAG_STATES = frozenset({"completed", "failed", "cancelled"})
# Jobs written per step of a large submit (and set buckets per cancel step): a few ms of
# Redis time each on a 2-core VM, so other clients wait no longer than that.
STEP_JOBS = 200
# Jobs per call of a bulk submit: small calls let the server write one while the client
# encodes the next (about 1 ms of Redis time each here).
STREAM_JOBS = 50


@dataclass(frozen=True)
class Submitted:
    dag_id: str
    created: bool  # False: the idempotency key matched an existing DAG


class Client:
    def __init__(
        self, client: redis.Redis, *, namespace: str = "mp", registry: Registry = REGISTRY
    ) -> None:
        self.redis = client
        self.keys = Keys(namespace)
        self.scripts = Scripts(client)
        self.registry = registry
        self._plain = PlainJobs()

    @classmethod
    def connect(cls, url: str | None = None, **kwargs: Any) -> Client:
        return cls(connect(url, namespace=kwargs.get("namespace", "mp")), **kwargs)

    def _run(self, name: str, *args: Any) -> Any:
        return self.scripts.run(name, self.keys.prefix, *args)

    # -- submitting -----------------------------------------------------------
    def submit(self, dag: Dag) -> Submitted:
        """Validate and write the DAG; nothing is written on a validation error.

        Up to ``STEP_JOBS`` jobs go in one atomic call. A larger DAG is written in steps
        of that many jobs (each step atomic and a few ms long, so a 100,000-job DAG never
        holds Redis for seconds) while it is `building`, and runs once it is whole. A
        submit that fails part-way cancels what it wrote.
        """
        plain = self._plain.of(dag, self.registry)
        if plain is not None:  # the commonest DAG, and what a burst of uploads submits
            node, queue, attempts, timeout = plain
            params = self._plain.params(dag, node)
            return self._submit_one(
                dag.id, dag.idempotency_key or "", encode_meta(dag.meta), "",
                node.name, node.stage, queue, params, attempts, timeout,
            )  # fmt: skip
        jobs = encode_jobs(dag, self.registry, live=self._live_if_needed([dag]))
        meta = encode_meta(dag.meta)
        idem = dag.idempotency_key or ""
        hook = encode_webhook(dag, jobs, self.registry)
        try:
            one = submit_one_fields(jobs[0]) if len(jobs) == 1 else None
            if one is not None:
                j, (queue, attempts, timeout) = jobs[0], one
                return self._submit_one(
                    dag.id, idem, meta, hook, j["name"], j["stage"], queue, j["params"],
                    attempts, timeout,
                )  # fmt: skip
            if len(jobs) <= STEP_JOBS:
                batch = encode_batch(jobs)
                extra = ("", hook) if hook else ()  # ARGV[6] step, ARGV[7] the webhook
                reply = self._run("submit_dag", dag.id, idem, meta, batch, REQUEST_ID, *extra)
                if reply == 1:  # written under its own id (see submit_dag.lua)
                    return Submitted(dag.id, True)
                return Submitted(as_str(reply[0]), bool(reply[1]))
            first = encode_batch(jobs[:STEP_JOBS])
            reply = self._run("submit_dag", dag.id, idem, meta, first, REQUEST_ID, "begin", hook)
        except redis.ResponseError as exc:
            raise SubmissionError(str(exc)) from None
        if reply != 1 and not int(reply[1]):  # the idempotency key named an existing DAG
            return Submitted(as_str(reply[0]), False)
        try:
            for i in range(STEP_JOBS, len(jobs), STEP_JOBS):
                part = encode_batch(jobs[i : i + STEP_JOBS])
                self._run("submit_dag", dag.id, "", "", part, "", "part")
            while int(self._run("submit_dag", dag.id, "", "", "", "", "seal", STEP_JOBS)[2]):
                pass
        except redis.ResponseError as exc:
            raise SubmissionError(str(exc)) from None  # cancelled while building
        except BaseException:
            with contextlib.suppress(Exception):
                self.cancel(dag.id)
            raise
        return Submitted(dag.id, True)

    def _submit_one(self, dag_id: str, idem: str, meta: str, hook: str, *job: str) -> Submitted:
        """submit_one.lua; ``job``: name, stage, queue, params, max_attempts, timeout_ms."""
        try:
            reply = self._run("submit_one", dag_id, idem, meta, REQUEST_ID, hook, *job)
        except redis.ResponseError as exc:
            raise SubmissionError(str(exc)) from None
        if reply == 1:  # written under its own id (see submit_one.lua)
            return Submitted(dag_id, True)
        return Submitted(as_str(reply[0]), bool(reply[1]))

    def submit_many(self, dags: list[Dag], *, chunk: int = 1000) -> list[Submitted]:
        """Submit many DAGs; each DAG is atomic on its own (one refused writes nothing and
        the others are still written, then SubmissionError names it).

        Small DAGs go many to a call, up to ``STREAM_JOBS`` jobs per call, each call
        sent as soon as it is encoded, and the replies of up to ``chunk`` DAGs read
        together; a DAG larger than a step is submitted on its own (``submit``).
        """
        live = self._live_if_needed(dags)
        large = {d.id: self.submit(d) for d in dags if len(d.nodes) > STEP_JOBS}
        small = [d for d in dags if d.id not in large]
        out: list[Submitted] = []
        refused: list[str] = []
        sent: deque[list[str]] = deque()  # the DAG ids of each call, in the order sent
        for start in range(0, len(small), chunk):
            for reply in self.scripts.run_stream(
                self._submit_calls(small[start : start + chunk], live, refused, sent)
            ):
                if isinstance(reply, Exception):
                    raise SubmissionError(str(reply))
                for entry, dag_id in zip(reply, sent.popleft(), strict=True):
                    if entry == 1:  # written under its own id (see submit_dag.lua)
                        out.append(Submitted(dag_id, True))
                        continue
                    if int(entry[1]) < 0:
                        refused.append(as_str(entry[2]))
                    out.append(Submitted(as_str(entry[0]), int(entry[1]) == 1))
        if refused:
            raise SubmissionError(refused[0])
        if large:  # in the order given
            written = iter(out)
            out = [large[d.id] if d.id in large else next(written) for d in dags]
        return out

    def _submit_calls(
        self, dags: list[Dag], live: set[str] | None, refused: list[str], sent: deque[list[str]]
    ) -> Iterator[tuple[str, str, tuple[Any, ...]]]:
        """One ``submit_dag`` call ('many') per STREAM_JOBS jobs, encoded as it is sent;
        each call's DAG ids are appended to ``sent`` as it goes. A DAG that does not
        validate is left out and its reason added to ``refused``: the calls before it are
        on their way already, and the others are still written."""
        batch: list[list[Any]] = []
        size = 0
        for d in dags:
            try:
                jobs = encode_jobs(d, self.registry, live=live)
                meta = encode_meta(d.meta)
                hook = encode_webhook(d, jobs, self.registry)
            except SubmissionError as exc:
                refused.append(str(exc))
                continue
            if batch and size + len(jobs) > STREAM_JOBS:
                sent.append([e[0] for e in batch])
                yield (
                    "submit_dag",
                    self.keys.prefix,
                    ("", "", "", "", REQUEST_ID, "many", encode_batch(batch)),
                )
                batch, size = [], 0
            entry: list[Any] = [d.id, d.idempotency_key or "", meta, jobs]
            batch.append([*entry, hook] if hook else entry)
            size += len(jobs)
        if batch:
            sent.append([e[0] for e in batch])
            yield (
                "submit_dag",
                self.keys.prefix,
                ("", "", "", "", REQUEST_ID, "many", encode_batch(batch)),
            )

    def _live_if_needed(self, dags: list[Dag]) -> set[str] | None:
        """The queues live workers serve, when some stage prefers a capability."""
        prefers = any(
            n.stage in self.registry and self.registry.get(n.stage).prefers
            for d in dags
            for n in d.nodes.values()
        )
        return live_queues(self.redis, self.keys) if prefers else None

    # -- reading --------------------------------------------------------------
    def dag(self, dag_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(self.keys.dag(dag_id))
        if not raw:
            return None
        d: dict[str, Any] = dag_fields(dag_id, raw)
        for k in ("total", "open", "dead", "upstream", "cancelled", "roots", "roots_failed"):
            d[k] = int(d.get(k) or 0)
        rollup = DagRollup.from_hash(d)
        d["completed"], d["percent"] = rollup.completed, rollup.percent
        d["meta"] = json.loads(d.get("meta") or "{}")
        return d

    def dag_state(self, dag_id: str) -> str | None:
        v = self.redis.hget(self.keys.dag(dag_id), "state")
        return as_str(v) if v else None

    def job(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(self.keys.job(job_id))
        if not raw:
            return None
        j: dict[str, Any] = job_fields(job_id, raw)[0]
        for k in ("result", "error", "params"):
            if j.get(k):
                j[k] = json.loads(j[k])
        for k in ("attempts", "max_attempts", "stalls", "pending", "prio"):
            if k in j:
                j[k] = int(j[k])
        j["progress"] = as_str_dict(self.redis.hgetall(self.keys.job_progress(job_id)))
        return j

    def jobs(self, dag_id: str) -> dict[str, dict[str, Any]]:
        """Every job of the DAG by name."""
        ids = sorted(as_str(m) for m in self.redis.smembers(self.keys.dag_jobs(dag_id)))
        out: dict[str, dict[str, Any]] = {}
        for jid in ids:
            j = self.job(jid)
            if j is not None:
                out[j["name"]] = j
        return out

    def queue_counts(self, queue: str) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.wait(queue))
        pipe.zcard(self.keys.active(queue))
        pipe.zcard(self.keys.delayed(queue))
        pipe.hget(self.keys.meta(queue), "paused")
        waiting, active, delayed, paused = pipe.execute()
        return {
            "waiting": waiting,
            "active": active,
            "delayed": delayed,
            "paused": int(paused == b"1"),
        }

    def queues(self) -> list[str]:
        return sorted(as_str(q) for q in self.redis.smembers(self.keys.queues))

    def workers(self) -> list[dict[str, str]]:
        """Live worker nodes (those whose heartbeat has not expired), as raw hashes."""
        return live_workers(self.redis, self.keys)

    def worker_beats(self) -> list[WorkerBeat]:
        """Live workers as their last heartbeat described them (``pipeline.worker_beat``)."""
        return [WorkerBeat.read(w["id"], w) for w in self.workers()]

    def capability_gaps(self) -> dict[str, int]:
        """Queues with waiting jobs that no live worker listens to: {queue: waiting}.

        A job that needs a capability nobody has (``default@gpu`` with no GPU worker up)
        is reported here instead of looking silently stuck.
        """
        return orphan_queues(self.redis, self.keys)

    def events(
        self, dag_id: str, *, after: str = "0", block: float | None = None, follow: bool = False
    ) -> Iterator[Event]:
        """The DAG's events from the start (or after an id); ``follow`` waits for new ones
        until the DAG finishes."""
        return read_events(
            self.redis,
            self.keys,
            dag_id,
            after=after,
            block=block,
            follow=follow,
            scripts=self.scripts,
        )

    # -- acting ---------------------------------------------------------------
    def cancel(self, dag_id: str) -> tuple[int, int]:
        """Cancel pending jobs; returns (cancelled, running and told to stop). Runs in
        steps of ``STEP_JOBS`` jobs; when it returns, no job of the DAG can start."""
        cancelled = running = 0
        try:
            while True:
                c, r, done = self._run("cancel_dag", dag_id, STEP_JOBS // 2)
                cancelled, running = cancelled + int(c), running + int(r)
                if int(done):
                    return cancelled, running
        except redis.ResponseError as exc:
            raise SubmissionError(str(exc)) from None

    def dead(self, limit: int = 100) -> list[dict[str, Any]]:
        """The dead-letter queue, oldest first, each job with its full context."""
        ids = self.redis.zrange(self.keys.dead, 0, limit - 1)
        return [j for j in (self.job(as_str(i)) for i in ids) if j is not None]

    def retry_dead(self, job_id: str) -> None:
        try:
            self._run("retry_dead", job_id)
        except redis.ResponseError as exc:
            raise SubmissionError(str(exc)) from None

    def retry_all_dead(self) -> int:
        """Retry each job that is in the dead-letter queue now, once. A retried job that
        dies again while this runs stays dead: reading the queue until it is empty would
        retry a poison job for as long as workers kill it faster than the loop runs."""
        n = 0
        for i in [as_str(i) for i in self.redis.zrange(self.keys.dead, 0, -1)]:
            try:
                self.retry_dead(i)
                n += 1
            except SubmissionError:
                self.redis.zrem(self.keys.dead, i)  # its DAG was cancelled
        return n

    def purge_dead(self) -> int:
        return int(self.redis.delete(self.keys.dead))

    def pause(self, queue: str) -> None:
        self._run("pause_queue", queue)

    def resume(self, queue: str) -> None:
        self._run("resume_queue", queue)

    def set_rate_limit(self, queue: str, max_jobs: int | None, per_seconds: float = 1.0) -> None:
        """At most ``max_jobs`` started per ``per_seconds`` across the fleet (None: no limit)."""
        if max_jobs is None:
            self.redis.hdel(self.keys.meta(queue), "rate_max", "rate_ms")
        else:
            self.redis.hset(
                self.keys.meta(queue),
                mapping={"rate_max": max_jobs, "rate_ms": int(per_seconds * 1000)},
            )

    def set_concurrency_limit(self, queue: str, max_active: int | None) -> None:
        """At most ``max_active`` jobs of the queue running at once across the fleet."""
        if max_active is None:
            self.redis.hdel(self.keys.meta(queue), "max_active")
        else:
            self.redis.hset(self.keys.meta(queue), "max_active", max_active)

    def throttle(self, queue: str, seconds: float) -> None:
        """Hold the whole queue back for ``seconds`` (a service asked us to slow down)."""
        self._run("throttle_queue", queue, int(seconds * 1000))

    def prune(self, retention: Retention | None = None, *, max_steps: int | None = None) -> Pruned:
        """Apply retention in bounded steps until nothing more is due (or ``max_steps``)."""
        return prune(self._run, retention or Retention(), max_steps=max_steps)
