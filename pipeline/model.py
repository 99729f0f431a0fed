"""What a job and a DAG are, before they reach Redis.

A ``Dag`` is built in Python, validated as a whole (unknown stage, params that are not
JSON, a cycle, a missing dependency) and only then written to Redis by one Lua script, so a
rejected submission leaves nothing behind.
"""

from __future__ import annotations

import os
import random
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from pipeline.errors import SubmissionError
from pipeline.jsontext import dumps_strict
from pipeline.keys import DAG_ID_MAX, JOB_NAME_MAX, check_identifier

PRIORITY_MIN = -1000
PRIORITY_MAX = 1000


class EdgePolicy(StrEnum):
    """What a parent does when one of its children ends in the dead-letter queue."""

    FAIL = "fail"  # the parent (and everything above it) fails; the default
    IGNORE = "ignore"  # the parent runs without that child's result
    CONTINUE = "continue"  # the parent runs and receives the failure among its inputs


class BackoffKind(StrEnum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True)
class Backoff:
    """Delay before retry number ``n`` (1-based): ``base * 2**(n-1)`` capped, with jitter.

    Jitter spreads retries of many jobs that failed together (a storage outage) so they do
    not return as one thundering herd: the delay is scaled by a random factor in
    ``[1 - jitter, 1 + jitter]``.
    """

    kind: BackoffKind = BackoffKind.EXPONENTIAL
    base: float = 1.0
    cap: float = 300.0
    jitter: float = 0.1

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        fixed = self.kind is BackoffKind.FIXED
        raw = min(self.base if fixed else self.base * 2 ** max(0, retry - 1), self.cap)
        if self.jitter > 0:
            r = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
            raw = min(raw * r, self.cap)
        return max(0.0, raw)

    def to_json(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "base": self.base, "cap": self.cap, "jitter": self.jitter}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Backoff:
        if not data:
            return cls()
        return cls(
            kind=BackoffKind(data.get("kind", "exponential")),
            base=float(data.get("base", 1.0)),
            cap=float(data.get("cap", 300.0)),
            jitter=float(data.get("jitter", 0.1)),
        )


@dataclass(frozen=True)
class JobOptions:
    """How a job is scheduled. ``None`` fields take the stage's registered default."""

    queue: str | None = None
    priority: int = 0  # higher runs first
    attempts: int | None = None
    backoff: Backoff | None = None
    timeout: float | None = None  # seconds
    delay: float = 0.0  # seconds from submission
    run_at: float | None = None  # unix seconds; wins over delay
    cost: int | None = None  # CPU slots the job occupies
    tags: tuple[str, ...] | None = None  # capabilities a worker must have


@dataclass
class Node:
    """One job of a DAG: a stage, its params, and the children it waits for."""

    name: str
    stage: str
    params: dict[str, Any] = field(default_factory=dict)
    options: JobOptions = field(default_factory=JobOptions)
    children: dict[str, EdgePolicy] = field(default_factory=dict)


DEFAULT_OPTIONS = JobOptions()  # frozen: shared by every job added without options


def new_id() -> str:
    # 64 random bits as 16 hex digits (uuid4().hex[:16] gave 60 and cost a UUID object)
    return os.urandom(8).hex()


class Dag:
    """A DAG under construction.

    Edges point from child to parent: ``dag.add("d", "merge", after=["b", "c"])`` makes ``d``
    a parent of ``b`` and ``c``; ``d`` runs once both completed and receives their results.
    A node may have several parents, so shared work (a probe) runs once.
    """

    def __init__(
        self,
        dag_id: str | None = None,
        *,
        idempotency_key: str | None = None,
        meta: Mapping[str, Any] | None = None,
        webhook: str | None = None,
    ) -> None:
        self.id = new_id() if dag_id is None else check_identifier(dag_id, "DAG id", DAG_ID_MAX)
        self.idempotency_key = idempotency_key
        self.meta: dict[str, Any] = dict(meta or {})
        # Where the DAG's end is announced (pipeline/webhooks.py); checked when submitted.
        self.webhook = webhook
        self.nodes: dict[str, Node] = {}

    def add(
        self,
        name: str,
        stage: str,
        params: Mapping[str, Any] | None = None,
        *,
        after: Iterable[str] | Mapping[str, EdgePolicy | str] = (),
        options: JobOptions | None = None,
        **option_fields: Any,
    ) -> str:
        if name in self.nodes:
            raise SubmissionError(f"duplicate job name {name!r} in DAG {self.id}")
        check_identifier(name, "job name", JOB_NAME_MAX)
        opts = options or DEFAULT_OPTIONS
        if option_fields:
            opts = replace(opts, **option_fields)
        if isinstance(after, Mapping):
            children = {c: EdgePolicy(p) for c, p in after.items()}
        else:
            children = {c: EdgePolicy.FAIL for c in after}
        self.nodes[name] = Node(name, stage, dict(params or {}), opts, children)
        return name

    def job_id(self, name: str) -> str:
        return f"{self.id}/{name}"

    def validate(
        self, known_stages: Iterable[str] | None = None, *, check_params: bool = True
    ) -> list[str]:
        """Check the DAG as a whole; return node names in a dependency order (children first).

        ``check_params=False``: the caller serialises the params itself, with the same
        check (a submit: encoding them twice was a tenth of its Python work)."""
        check_identifier(self.id, "DAG id", DAG_ID_MAX)
        if not self.nodes:
            raise SubmissionError(f"DAG {self.id} has no jobs")
        known: Container[str] | None = None
        shown: Iterable[str] = ()  # the names an error lists
        if isinstance(known_stages, Container):  # a registry answers `in`: no set per submit
            known = shown = known_stages
        elif known_stages is not None:
            known = shown = set(known_stages)
        for node in self.nodes.values():
            if known is not None and node.stage not in known:
                raise SubmissionError(
                    f"job {node.name!r}: unknown stage {node.stage!r} "
                    f"(known: {', '.join(sorted(shown)) or 'none'})"
                )
            for child in node.children:
                if child not in self.nodes:
                    raise SubmissionError(
                        f"job {node.name!r} depends on {child!r}, which is not in the DAG"
                    )
            if check_params:
                check_json(node.params, f"job {node.name!r} params")
            p = node.options.priority
            if not PRIORITY_MIN <= p <= PRIORITY_MAX:
                raise SubmissionError(
                    f"job {node.name!r}: priority {p} outside {PRIORITY_MIN}..{PRIORITY_MAX}"
                )
        return topological_order(self.nodes)


def check_json(value: Any, what: str) -> str:
    """Serialise ``value`` as strict JSON or raise a SubmissionError naming ``what``."""
    try:
        return dumps_strict(value)
    except (TypeError, ValueError) as exc:
        raise SubmissionError(f"{what} are not JSON-serialisable: {exc}") from None


def topological_order(nodes: Mapping[str, Node]) -> list[str]:
    """Kahn's algorithm over child -> parent edges; raises on a cycle, naming one."""
    if len(nodes) == 1:  # the commonest DAG: one job, no edges (one to itself is a cycle)
        ((name, node),) = nodes.items()
        if not node.children:
            return [name]
    pending = {name: len(node.children) for name, node in nodes.items()}
    parents: dict[str, list[str]] = {name: [] for name in nodes}
    for name, node in nodes.items():
        for child in node.children:
            parents[child].append(name)
    ready = [n for n, c in pending.items() if c == 0]
    order: list[str] = []
    while ready:
        n = ready.pop()
        order.append(n)
        for p in parents[n]:
            pending[p] -= 1
            if pending[p] == 0:
                ready.append(p)
    if len(order) != len(nodes):
        stuck = sorted(n for n, c in pending.items() if c > 0)
        raise SubmissionError(f"DAG has a cycle through: {', '.join(stuck)}")
    return order
