"""Staged inputs removed once the DAGs that use them ended (``MEDIAPIPE_STAGE_RETENTION``).

``submit --stage`` uploads each input once, content-addressed, so two submissions of one
file share one object. Each object therefore records in Redis what keeps it (keys in
pipeline/keys.py, all under the namespace's ``{ns}`` hash tag; transitions in
pipeline/scripts/staged_*.lua):

- ``staged_hold``: before ``submit`` looks for the object or uploads it, it holds it, so
  no sweeper deletes it before the DAGs that use it are written;
- ``staged_use``: the DAG ids written (or ``keep`` under ``never``) replace the hold;
- ``staged_release``: a sweeper may delete the object once no hold lasts and every DAG
  that uses it ended more than its grace ago (completed or cancelled; a failed DAG can
  still be retried from the dead-letter queue, so it keeps the object until retention
  deletes it); the object is then marked as being deleted, and a submit that wants it
  meanwhile waits for the deletion and uploads it again;
- ``staged_deleted``: the sweeper's report; a deletion that failed is tried again on a
  later pass.

The sweep runs where the store's credentials are: in every worker box on the retention
interval (``MEDIAPIPE_RETENTION_INTERVAL``, one node per interval takes the turn; none
with ``MEDIAPIPE_RETENTION=off``), and
in ``submit --wait`` for its own inputs once its DAGs ended. Each deletion goes through
the store's fleet-wide circuit breaker, as uploads and fetches do.

``MEDIAPIPE_STAGE_RETENTION`` is read by ``submit`` and recorded with each DAG's use of
the object, so whichever node sweeps applies what the submitter asked: ``end`` (the
default: deleted once the DAG ends), a duration (``24h``: that long after the end), or
``never`` (the object is kept, also for later submissions of the same file).

    StagedInputs(client).hold(uri, endpoint)       # in submit, before the upload
    sweep(client)                                   # a pass, where credentials are
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from pipeline.breaker import BreakerPolicy, ServiceBreakers, service_name
from pipeline.client import Client
from pipeline.errors import MediapipeError, ServiceUnavailableError, SubmissionError
from pipeline.replies import as_str
from pipeline.retention import Retention, parse_duration
from stages.storage import S3Storage, s3_errors

log = logging.getLogger("mediapipe.staged")

ENV = "MEDIAPIPE_STAGE_RETENTION"
HOLD_MS = 24 * 3600 * 1000  # a submit that never came back: its hold lapses after a day
DELETING_MS = 10 * 60 * 1000  # a sweeper that died mid-deletion: its mark lapses
HOLD_WAIT = 600.0  # seconds a submit waits for a deletion under way before giving up
NEVER = -1


def retention_grace(env: Mapping[str, str] | None = None) -> int:
    """Milliseconds a staged input outlives the DAG that used it: 0 (``end``, the
    default), a duration, or NEVER (-1). A bad value raises ValueError with one line."""
    raw = (os.environ if env is None else env).get(ENV, "").strip().lower()
    if raw in ("", "end"):
        return 0
    if raw == "never":
        return NEVER
    try:
        return int(parse_duration(raw) * 1000)
    except ValueError:
        raise ValueError(f"{ENV}={raw!r}: expected end, never or a duration (24h)") from None


def object_id(uri: str, endpoint: str | None) -> str:
    """A staged object's name in Redis: one per endpoint and URI, of safe characters."""
    return hashlib.sha256(f"{endpoint or ''}\n{uri}".encode()).hexdigest()[:32]


class StagedInputs:
    """A submit's side: hold each object before staging it, then name the DAGs using it."""

    def __init__(self, client: Client, grace_ms: int | None = None) -> None:
        self.client = client
        if grace_ms is None:
            try:
                grace_ms = retention_grace()
            except ValueError as exc:
                raise SubmissionError(str(exc)) from None
        self.grace_ms = grace_ms
        self.token = uuid.uuid4().hex
        self.held: dict[str, str] = {}  # object id -> uri

    def hold(self, uri: str, endpoint: str | None) -> None:
        """Hold the object (waiting while a sweeper deletes it: then it is uploaded anew)."""
        oid = object_id(uri, endpoint)
        where = json.dumps({"uri": uri, "endpoint": endpoint}, separators=(",", ":"))
        deadline = time.monotonic() + HOLD_WAIT
        while True:
            wait = int(self._run("staged_hold", oid, where, self.token, HOLD_MS))
            if wait <= 0:
                self.held[oid] = uri
                return
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(f"{uri}: still being deleted from the stage")
            time.sleep(min(wait / 1000, 1.0))

    def holder(self, endpoint: str | None) -> Callable[[str], None]:
        """``hold`` for the objects of one endpoint (``stage_input``'s ``hold``)."""
        return lambda uri: self.hold(uri, endpoint)

    def use(self, uses: Iterable[tuple[str, str | None, str]]) -> None:
        """Record (uri, endpoint, dag id) for every DAG written; every hold ends."""
        dags: dict[str, list[str]] = {oid: [] for oid in self.held}
        for uri, endpoint, dag_id in uses:
            dags.setdefault(object_id(uri, endpoint), []).append(dag_id)
        for oid, ids in dags.items():
            self._run("staged_use", oid, self.token, self.grace_ms, *ids)
        self.held.clear()

    def _run(self, name: str, *args: object) -> Any:
        return self.client.scripts.run(name, self.client.keys.prefix, *args)


@dataclass
class Swept:
    """What a sweep did: objects deleted, kept (still used or within their grace),
    whose deletion failed (tried again on the next pass), and why the last one failed."""

    deleted: list[str] = field(default_factory=list)
    kept: int = 0
    failed: int = 0
    error: str | None = None


def sweep(
    client: Client,
    *,
    uris: Iterable[tuple[str, str | None]] | None = None,
    budget: int = 100,
    policy: BreakerPolicy | None = None,
    cursor: int = 0,
) -> tuple[Swept, int]:
    """One step: delete the staged objects nothing keeps any more among about ``budget``
    records from ``cursor`` (an HSCAN cursor; the next one is returned, 0 when the step
    ended a round), or among ``uris`` [(uri, endpoint)] only. Returns (what it did, the
    next cursor). Each object is decided by one atomic transition, so any number of
    nodes may sweep at once."""
    done = Swept()
    keys = client.keys
    if uris is not None:
        ids = [object_id(u, e) for u, e in uris]
        nxt = 0
    else:
        nxt, found = client.redis.hscan(keys.staged, cursor, count=budget)
        ids = [as_str(k) for k in found]
    breakers = ServiceBreakers(
        client.redis,
        namespace=keys.namespace,
        policy=policy or BreakerPolicy.from_env(),
        scripts=client.scripts,
    )
    token = uuid.uuid4().hex
    for oid in ids:
        reply = client.scripts.run("staged_release", keys.prefix, oid, token, DELETING_MS)
        if int(reply[0]) != 1:
            done.kept += int(reply[0]) == 0
            continue
        where = json.loads(as_str(reply[1]))
        uri, endpoint = str(where["uri"]), where.get("endpoint")
        ok, why = _delete(breakers, uri, endpoint)
        client.scripts.run("staged_deleted", keys.prefix, oid, token, int(ok))
        if ok:
            done.deleted.append(uri)
        else:
            done.failed += 1
            done.error = why
            log.warning("staged input not deleted, tried again later: %s", why)
    return done, int(nxt)


def _delete(breakers: ServiceBreakers, uri: str, endpoint: str | None) -> tuple[bool, str]:
    """Delete one object through its store's breaker: (deleted, why not)."""
    service = service_name(uri, endpoint)
    gate = breakers.gate(service)
    if not gate.allowed:
        return False, f"{uri}: the store's breaker is {gate.state}"
    bucket, _, key = uri[5:].partition("/")
    try:
        store = S3Storage(bucket, endpoint=endpoint)
        with s3_errors(uri):
            store.client.delete_object(Bucket=bucket, Key=key)
    except MediapipeError as exc:
        # Only an outage counts against the breaker: a store that refused is up.
        breakers.outcome(service, not isinstance(exc, ServiceUnavailableError))
        return False, str(exc)
    breakers.outcome(service, True)
    return True, ""


def run_sweeper(
    url: str | None, namespace: str, stop: threading.Event, interval: float | None = None
) -> None:
    """Sweep on the retention interval until ``stop`` is set (a worker box's thread).
    Nothing with ``MEDIAPIPE_RETENTION=off``; Redis or the store away: the next pass."""
    retention = Retention.from_env()
    if retention is None:
        return
    every = interval or retention.interval
    client: Client | None = None
    cursor = 0
    me = uuid.uuid4().hex
    while not stop.wait(every):
        try:
            if client is None:
                client = Client.connect(url, namespace=namespace)
            # One node per interval goes round, whichever takes the turn: the records
            # are read once per interval however many nodes run.
            if not client.redis.exists(client.keys.staged):
                continue  # nothing staged: no turn to take (no key written for nothing)
            turn = client.keys.staged_sweep
            if not client.redis.set(turn, me, nx=True, px=int(every * 1000)):
                continue
            while True:  # one whole round of the records, in budgets
                done, cursor = sweep(client, cursor=cursor)
                if done.deleted:
                    log.info("deleted %d staged inputs no DAG uses", len(done.deleted))
                if cursor == 0 or stop.is_set():
                    break
        except (redis.RedisError, MediapipeError, OSError) as exc:
            log.debug("staged inputs: sweep failed (%s); next interval", exc)
            client = None
        except Exception:
            log.warning("staged inputs: sweep failed; next interval", exc_info=True)
