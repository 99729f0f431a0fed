"""Turn validated DAG nodes into the JSON the ``submit_dag`` and ``add_children`` scripts read."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.errors import SubmissionError
from pipeline.jsontext import dumps_compact
from pipeline.keys import DAG_ID_MAX, check_identifier
from pipeline.model import DEFAULT_OPTIONS, Backoff, Dag, Node, check_json
from pipeline.registry import Registry, StageSpec
from pipeline.routing import routed_queue
from pipeline.webhooks import DELIVERY, WEBHOOK_STAGE, Delivery, encode_spec

DEFAULT_BACKOFF = Backoff()
# A one-job DAG whose job has no more than these fields (its options at their usual
# values, see encode_node) is sent as arguments to submit_one, not as JSON to submit_dag.
PLAIN_JOB = frozenset(
    {"id", "name", "stage", "queue", "params", "max_attempts", "timeout_ms", "root"}
)


def encode_nodes(
    dag: Dag, registry: Registry, *, extra_names: Iterable[str] = (), live: set[str] | None = None
) -> str:
    """Validate ``dag`` and encode its jobs, children before parents.

    ``extra_names`` are jobs that already exist in the DAG in Redis (for run-time fan-out)
    and so may not be reused.
    """
    return encode_batch(encode_jobs(dag, registry, extra_names=extra_names, live=live))


def encode_jobs(
    dag: Dag, registry: Registry, *, extra_names: Iterable[str] = (), live: set[str] | None = None
) -> list[dict[str, Any]]:
    """``encode_nodes`` as a list, so a large DAG can be sent in several steps. Each job
    says whether it is a root of the whole DAG (no job depends on it), which a step that
    sees only part of the DAG cannot work out."""
    order = dag.validate(registry, check_params=False)  # encode_node checks them
    taken = set(extra_names)
    jobs: list[dict[str, Any]] = []
    for name in order:
        if name in taken:
            raise SubmissionError(f"job name {name!r} is already used in DAG {dag.id}")
        jobs.append(encode_node(dag, dag.nodes[name], registry, live=live))
    children = {c[0] for j in jobs for c in j.get("children", ())}
    for j in jobs:
        j["root"] = 0 if j["id"] in children else 1
    return jobs


def encode_batch(jobs: list[Any]) -> str:
    return dumps_compact(jobs)


def encode_node(
    dag: Dag, node: Node, registry: Registry, *, live: set[str] | None = None
) -> dict[str, Any]:
    """One job's JSON. ``live``: the queues live workers serve, for preferred routing."""
    spec = registry.get(node.stage)
    o = node.options
    backoff = o.backoff or spec.backoff
    attempts = o.attempts if o.attempts is not None else spec.attempts
    if attempts < 1:
        raise SubmissionError(f"job {node.name!r}: attempts must be at least 1")
    timeout = o.timeout if o.timeout is not None else spec.timeout
    cost = o.cost if o.cost is not None else spec.cost
    if cost < 1:
        raise SubmissionError(f"job {node.name!r}: cost must be at least 1")
    if o.delay < 0:
        raise SubmissionError(f"job {node.name!r}: delay must not be negative")
    tags = o.tags if o.tags is not None else spec.tags
    queue, fallback = routed_queue(o.queue or spec.queue, tags), ""
    if spec.prefers and not tags:
        preferred = routed_queue(queue, spec.prefers)
        if live is not None and preferred in live:
            queue, fallback = preferred, queue
    job: dict[str, Any] = {
        "id": dag.job_id(node.name),
        "name": node.name,
        "stage": node.stage,
        "queue": queue,
        "params": check_json(node.params, f"job {node.name!r} params"),
        "max_attempts": attempts,
        "timeout_ms": int(timeout * 1000),
    }
    # The rest only where not at its usual value (create_jobs.lua has those): what the
    # server decodes per job, a third of a submit's server time, halves.
    if fallback:
        job["fallback"] = fallback
    if o.priority:
        job["prio"] = o.priority
    # The usual policy is not stored: a job without one gets it back when claimed.
    if backoff != DEFAULT_BACKOFF:
        job["backoff"] = compact_json(backoff.to_json())
    if cost != 1:
        job["cost"] = cost
    if tags:
        job["tags"] = ",".join(tags)
    if spec.max_stalls:
        job["max_stalls"] = spec.max_stalls
    if o.run_at:
        job["run_at"] = int(o.run_at * 1000)
    if o.delay:
        job["delay_ms"] = int(o.delay * 1000)
    if node.children:
        job["children"] = [[dag.job_id(c), str(p)] for c, p in node.children.items()]
    return job


def compact_json(value: Any) -> str:
    return dumps_compact(value)


def encode_meta(meta: Mapping[str, Any]) -> str:
    return check_json({"submitted_at": time.time(), **meta}, "DAG meta")


def encode_webhook(dag: Dag, jobs: list[dict[str, Any]], registry: Registry) -> str:
    """The DAG hash's ``webhook`` field ('' for a DAG without one): its URL, checked,
    the names of its roots, and the delivery job's options from the ``webhook`` stage's
    declaration when this process has it, else the engine's defaults."""
    if not dag.webhook:
        return ""
    delivery = DELIVERY
    if WEBHOOK_STAGE in registry:
        spec = registry.get(WEBHOOK_STAGE)
        queue = routed_queue(spec.queue, spec.tags)
        delivery = Delivery(queue, spec.attempts, spec.backoff, spec.timeout)
    roots = [j["name"] for j in jobs if j.get("root") == 1]
    return encode_spec(dag.webhook, roots, delivery)


def plain_stage(spec: StageSpec) -> tuple[str, str, str] | None:
    """submit_one's (queue, max_attempts, timeout_ms) for a job of ``spec`` added without
    options, as ``encode_node`` itself writes them; None where it writes more fields than
    PLAIN_JOB for such a job (or refuses it), or where the queue depends on live workers."""
    if spec.prefers:
        return None
    one = Registry()
    one.add(spec)
    try:
        j = encode_node(_PROBE, Node("a", spec.name), one)
    except Exception:  # a declaration the general path refuses, in its order
        return None
    return submit_one_fields(j)


def submit_one_fields(job: dict[str, Any]) -> tuple[str, str, str] | None:
    """An encoded job's queue, max_attempts and timeout_ms as submit_one takes them, or
    None where the job holds more than PLAIN_JOB's fields or its numbers are not ints (a
    bool or another number type goes as JSON, to submit_dag, as JSON would write it)."""
    attempts, timeout = job["max_attempts"], job["timeout_ms"]
    if not job.keys() <= PLAIN_JOB or type(attempts) is not int or type(timeout) is not int:
        return None
    return job["queue"], str(attempts), str(timeout)


_PROBE = Dag("probe")


class PlainJobs:
    """Which DAGs ``Client.submit`` can send to submit_one without encoding them as a
    list of job dicts first: one job, no webhook, no options, a stage ``plain_stage``
    accepts. Its arguments are worked out once per stage declaration: half of a one-job
    submit's client Python went to encoding what is the same for every such job."""

    def __init__(self) -> None:
        self._stages: dict[str, tuple[StageSpec, tuple[str, str, str] | None]] = {}

    def of(self, dag: Dag, registry: Registry) -> tuple[Node, str, str, str] | None:
        """The DAG's job and its queue, max_attempts and timeout_ms, or None: not plain.
        ``registry``: the caller's as it is now (a client's may be replaced)."""
        if dag.webhook or len(dag.nodes) != 1:
            return None
        (node,) = dag.nodes.values()
        o = node.options
        if node.children or (o is not DEFAULT_OPTIONS and o != DEFAULT_OPTIONS):
            return None
        spec = registry.find(node.stage)
        if spec is None:
            return None  # the general path says why
        known = self._stages.get(node.stage)
        if known is None or known[0] is not spec:  # first seen, or declared again since
            known = self._stages[node.stage] = (spec, plain_stage(spec))
        if known[1] is None:
            return None
        return (node, *known[1])

    @staticmethod
    def params(dag: Dag, node: Node) -> str:
        """The checks ``encode_jobs`` makes of such a DAG, in its order, and the params."""
        check_identifier(dag.id, "DAG id", DAG_ID_MAX)
        return check_json(node.params, f"job {node.name!r} params")
