"""Firing a schedule whose path is in object storage: ``s3://bucket/prefix/`` is watched
(each new content submitted once, mediajobs/s3_watch.py says how content is identified),
``s3://bucket/key`` is submitted again on every tick.

Each object becomes an ``s3://`` input DAG, probed and planned on a worker
(mediajobs/remote_plan.py); nothing is read here but the listing. The listing goes
through the store's fleet-wide circuit breaker, as uploads and fetches do: a store that
fails is counted there (a ``schedule_store_error`` event each time, the breaker opening
after ``MEDIAPIPE_BREAKER_FAILURES`` in a row) and an open breaker skips the listing.
Either way nothing is marked seen, so the next tick lists again; the idempotency key
``schedule:<name>:<identity>`` gives a firing that submitted but died before marking an
object seen the same DAG back, never a second one.
"""

from __future__ import annotations

from collections.abc import Callable

from mediajobs import s3_watch
from mediajobs.schedule_results import Firing, SubmittedInput
from pipeline.breaker import BreakerPolicy, ServiceBreakers, service_name
from pipeline.client import Client
from pipeline.errors import MediapipeError, ServiceUnavailableError
from pipeline.schedules import Schedule, Schedules

# (event, schedule, tick, **fields): adds a schedule event to {ns}:events.
EventFn = Callable[..., None]


def fire_s3(
    client: Client, schedules: Schedules, event: EventFn, spec: Schedule, tick: int, late: bool
) -> Firing:
    """Fire one won tick of an ``s3://`` schedule."""
    if not spec.watch:
        found = [s3_watch.Found(spec.path, "", "")]
    else:
        breakers = ServiceBreakers(
            client.redis,
            namespace=client.keys.namespace,
            policy=BreakerPolicy.from_env(),
            scripts=client.scripts,
        )
        service = service_name(spec.path)
        gate = breakers.gate(service)
        if not gate.allowed:
            why = f"{spec.path}: the store's breaker is {gate.state}; listed again next tick"
            event("schedule_store_error", spec, tick, error=why)
            return Firing(spec.name, tick, late, error=why)
        seen_key = schedules.seen_key(spec.name)

        def seen(identities: list[str]) -> list[bool]:
            return [bool(f) for f in client.redis.smismember(seen_key, identities)]

        try:
            found = s3_watch.unseen(spec.path, seen)
        except MediapipeError as exc:
            # A store that answered (no such bucket, access denied) is up: only an
            # outage counts against its breaker.
            breakers.outcome(service, not isinstance(exc, ServiceUnavailableError))
            event("schedule_store_error", spec, tick, error=str(exc))
            return Firing(spec.name, tick, late, error=str(exc))
        breakers.outcome(service, True)
    if not found:
        return Firing(spec.name, tick, late)
    from mediajobs.planning import plan  # the presets and media stages: only when needed

    planned = plan([f.uri for f in found], spec.preset, spec.out, priority=spec.priority)
    todo = [(p, f) for p, f in zip(planned, found, strict=True) if p.dag is not None]
    for p, f in todo:
        assert p.dag is not None
        # One DAG per content (watched) or per tick (a single object).
        p.dag.idempotency_key = (
            f"schedule:{spec.name}:{f.identity}"
            if spec.watch
            else f"schedule:{spec.name}:{tick}:{f.uri}"
        )
        if spec.webhook:
            p.dag.webhook = spec.webhook
    results = client.submit_many([p.dag for p, _ in todo if p.dag is not None])
    submitted: list[SubmittedInput] = []
    marks: list[str] = []
    for (_, f), res in zip(todo, results, strict=True):
        submitted.append(SubmittedInput(f.uri, res.dag_id, f.identity, res.created))
        marks += [f.identity, f.listed]
        event("schedule_submitted", spec, tick, dag=res.dag_id, input=f.uri)
    # A rejection here is the schedule's (its preset), not the object's: not marked seen,
    # so the object is submitted once the schedule is fixed.
    rejected = [
        (f.uri, p.error or "rejected") for p, f in zip(planned, found, strict=True) if p.dag is None
    ]
    for uri, why in rejected:
        event("schedule_rejected", spec, tick, input=uri, error=why)
    # Marked seen only after the submission (as for files): a crash before this point
    # means the next tick submits again, and the idempotency key returns the same DAG.
    if spec.watch and marks:
        client.redis.sadd(schedules.seen_key(spec.name), *[m for m in marks if m])
    return Firing(spec.name, tick, late, tuple(submitted), tuple(rejected))
