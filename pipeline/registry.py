"""Stages register here by name, with the defaults their jobs get.

A stage is a plain function ``fn(ctx, params, inputs) -> result``: ``params`` is the job's
JSON params, ``inputs`` maps each completed child's job name to its result, and the result
must be JSON. ``ctx`` (see ``pipeline.context``) reports progress and may fan out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import SubmissionError
from pipeline.model import Backoff

StageFn = Callable[..., Any]


@dataclass(frozen=True)
class StageSpec:
    name: str
    fn: StageFn
    queue: str = "default"
    cost: int = 1
    timeout: float = 3600.0
    attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    tags: tuple[str, ...] = ()  # capabilities a worker must have
    # 0: a stall spends an attempt like a failure; > 0 also dies after that many stalls
    max_stalls: int = 0
    prefers: tuple[str, ...] = ()  # capabilities it runs best on, when a worker has them


BatchFn = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True)
class BatchSpec:
    """A way to run many jobs of one stage at once on a worker with ``needs`` (a GPU).

    ``fn(jobs)`` takes ClaimedJobs and returns, per job, its result, the exception it
    failed with, or None to have that job run alone through the stage function.
    """

    stage: str
    fn: BatchFn
    needs: tuple[str, ...]
    size: int = 32


class Registry:
    def __init__(self) -> None:
        self._stages: dict[str, StageSpec] = {}
        self._batches: dict[str, BatchSpec] = {}

    def add_batch(self, spec: BatchSpec) -> BatchSpec:
        self._batches[spec.stage] = spec
        return spec

    def batches(self) -> list[BatchSpec]:
        return [self._batches[k] for k in sorted(self._batches)]

    def add(self, spec: StageSpec) -> StageSpec:
        self._stages[spec.name] = spec
        return spec

    def get(self, name: str) -> StageSpec:
        try:
            return self._stages[name]
        except KeyError:
            raise SubmissionError(f"unknown stage {name!r}") from None

    def find(self, name: str) -> StageSpec | None:
        return self._stages.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._stages

    def __iter__(self) -> Iterator[str]:
        return iter(self._stages)

    def names(self) -> list[str]:
        return sorted(self._stages)


REGISTRY = Registry()


def stage(
    name: str,
    *,
    queue: str = "default",
    cost: int = 1,
    timeout: float = 3600.0,
    attempts: int = 3,
    backoff: Backoff | None = None,
    tags: tuple[str, ...] = (),
    max_stalls: int = 0,
    prefers: tuple[str, ...] = (),
    registry: Registry | None = None,
) -> Callable[[StageFn], StageFn]:
    """Register ``fn`` as stage ``name`` (decorator)."""

    def register(fn: StageFn) -> StageFn:
        (registry or REGISTRY).add(
            StageSpec(
                name,
                fn,
                queue,
                cost,
                timeout,
                attempts,
                backoff or Backoff(),
                tuple(tags),  # a list given here could change under a spec that is frozen
                max_stalls,
                tuple(prefers),
            )
        )
        return fn

    return register


def batched(
    stage_name: str, *, needs: tuple[str, ...], size: int = 32, registry: Registry | None = None
) -> Callable[[BatchFn], BatchFn]:
    """Register ``fn`` as the batch runner of ``stage_name`` on workers with ``needs``."""

    def register(fn: BatchFn) -> BatchFn:
        (registry or REGISTRY).add_batch(BatchSpec(stage_name, fn, tuple(needs), size))
        return fn

    return register
