"""The stage contract: one declaration says everything about a media stage.

    @media_stage(
        "video_poster",
        params=PosterParams,          # a dataclass of param(default, rule) fields
        needs=("probe",),             # stages whose results arrive as inputs
        outputs=("poster",),          # result keys that hold its files
        kinds=("video",),             # inputs it applies to
        timeout=600,
    )
    def video_poster(ctx, params, inputs): ...

The declaration registers the function with the engine (``pipeline.registry.stage``) and
wraps it: the params the job does not set get their declared defaults, a stage that
declares outputs runs into a scratch folder and publishes them when its job names a
storage target (``stages.storage.stores_outputs``), and every result gets ``stage_info``
(attempt and run time) for the manifest. The output keys join the set that the manifest
and storage walk (``stages.outputs``).

What presets need from the declarations is ``catalog()``: see its docstring.

Adding a stage: (1) write the function under ``@media_stage`` with its params dataclass,
in a module of ``stages/``; (2) import that module in ``stages/__init__.py``; (3) give it a
table in the presets that should run it. Manifest and storage follow from the
declaration, and so do the presets' checks and edges once they read ``catalog()``.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PermanentError, SubmissionError
from pipeline.model import Backoff, Dag, EdgePolicy
from pipeline.registry import REGISTRY, Registry, StageSpec, stage
from stages.inputs import fetched, forget, is_remote
from stages.outputs import declare_output_keys
from stages.params import NoParams, ParamSpec, schema_of
from stages.storage import StageFunction, stores_outputs

# Keys the submitter sets on every job: where a stage reads and writes and which store it
# publishes to. Never a params field, never a preset's to say.
# ``input_sha256``: the digest an input was staged with (stages.inputs checks the fetched
# copy against it).
JOB_KEYS = frozenset(
    {"input", "out_dir", "name", "storage", "service", "endpoint", "input_sha256", "input_uri"}
)


@dataclass(frozen=True)
class MediaStage:
    """One declared stage, as the catalog shows it."""

    name: str
    params: type  # the params dataclass
    schema: tuple[ParamSpec, ...]  # its keys: type, default, rule
    needs: tuple[str, ...]
    outputs: tuple[str, ...]
    # The kinds of input (image, video) whose presets may choose this stage. Empty: the
    # stage frames every DAG instead: first (probe) or, with ``collects``, last (manifest).
    kinds: tuple[str, ...]
    essential: bool  # without it the DAG has failed; otherwise an extra, reported as failed
    collects: bool  # runs after every other job and receives every result
    spec: StageSpec = field(repr=False)

    @property
    def keys(self) -> dict[str, ParamSpec]:
        return {p.key: p for p in self.schema}

    def defaults(self) -> dict[str, Any]:
        return {p.key: p.default for p in self.schema}

    def check(self, values: Any, where: str | None = None, *, job_keys: bool = True) -> None:
        """A SubmissionError naming ``where`` (default the stage) and the key at fault,
        unless ``values`` is a table of keys this stage accepts, each passing its rule.
        ``job_keys``: whether the submitter's keys (``JOB_KEYS``) may appear; a preset's
        table is checked with False."""
        where = where or f"stage {self.name}"
        if not isinstance(values, Mapping):
            raise SubmissionError(f"{where} must be a table")
        accepted = self.keys
        for key, value in values.items():
            if key in JOB_KEYS:
                if job_keys:
                    continue
                raise SubmissionError(
                    f"{where}: key {key!r} is not allowed in a preset (where outputs go is"
                    " set by submit)"
                )
            if key not in accepted:
                listed = ", ".join(accepted) or "none"
                raise SubmissionError(f"{where}: unknown key {key!r} (accepted: {listed})")
            try:
                accepted[key].check(value)
            except ValueError as exc:
                raise SubmissionError(f"{where}: {key} must be {exc}, not {value!r}") from None

    def add_to(
        self,
        dag: Dag,
        params: Mapping[str, Any],
        *,
        name: str | None = None,
        after: Mapping[str, EdgePolicy | str] | None = None,
        **options: Any,
    ) -> str:
        """Add a job of this stage to ``dag`` once its params pass ``check``: a bad value
        is a SubmissionError now, before anything is queued. ``after`` defaults to the
        declared needs that are already in the DAG."""
        self.check(params, f"job {name or self.name} ({self.name})")
        edges = after if after is not None else {n: EdgePolicy.FAIL for n in self.needs}
        edges = {n: p for n, p in edges.items() if n in dag.nodes}
        return dag.add(name or self.name, self.name, dict(params), after=edges, **options)


class Catalog:
    """Declared media stages by name (the engine's Registry holds how to run them)."""

    def __init__(self) -> None:
        self._stages: dict[str, MediaStage] = {}

    def add(self, declared: MediaStage) -> None:
        self._stages[declared.name] = declared

    def get(self, name: str) -> MediaStage:
        try:
            return self._stages[name]
        except KeyError:
            raise SubmissionError(f"unknown stage {name!r}") from None

    def __iter__(self) -> Iterator[MediaStage]:
        return iter(sorted(self._stages.values(), key=lambda s: s.name))

    def __contains__(self, name: object) -> bool:
        return name in self._stages


CATALOG = Catalog()


def catalog() -> tuple[MediaStage, ...]:
    """Every declared media stage, by name: what presets build DAGs from.

    For each entry: ``name``; ``kinds`` (a preset of kind K may have a table for the
    stage when K is in it); ``needs`` (stages whose results it gets: the DAG's edges);
    ``essential`` (its failure fails the DAG: a FAIL edge to the collecting stage, others
    CONTINUE, and a preset must choose at least one essential stage of its kind);
    ``collects`` (the stage that runs last and receives every result, the manifest);
    ``schema`` (the keys a table may set, each with ``type``, ``default``, ``expects`` in
    words and ``check(value)``); ``check(table, where, job_keys=False)`` (checks a preset's
    table: unknown keys, the submitter's ``JOB_KEYS``, types and ranges, each error
    naming ``where`` and the key); ``add_to(dag, params, ...)`` (adds a checked job).

    An entry with empty ``kinds`` frames every DAG: the ones that do not collect run
    first (the probe; other stages name them in ``needs``), the collecting one last.
    Importing ``stages`` declares the built-in stages; a module imported before (a
    worker's ``--import``) can declare more.
    """
    return tuple(CATALOG)


def stage_info(attempt: int, seconds: float, **extra: Any) -> dict[str, Any]:
    """What every result says of the run that made it, for the manifest."""
    return {"attempt": attempt, "seconds": round(seconds, 3), **extra}


def media_stage(
    name: str,
    *,
    params: type = NoParams,
    needs: tuple[str, ...] = (),
    outputs: tuple[str, ...] = (),
    kinds: tuple[str, ...] = (),
    essential: bool = False,
    collects: bool = False,
    queue: str = "default",
    cost: int = 1,
    timeout: float = 3600.0,
    attempts: int = 3,
    backoff: Backoff | None = None,
    tags: tuple[str, ...] = (),
    prefers: tuple[str, ...] = (),
    max_stalls: int = 0,
    reads_input: bool = True,
    registry: Registry | None = None,
    catalog: Catalog | None = None,
) -> Callable[[StageFunction], StageFunction]:
    """Declare ``fn`` as media stage ``name`` (decorator); returns the wrapped function,
    which is what the engine runs. ``reads_input``: False for a stage that never opens
    the input file (packaging, the manifest), so an input in object storage is not fetched
    for it. ``registry`` and ``catalog`` default to the global ones (a test declares its
    own stages into its own)."""
    schema = schema_of(params)
    defaults = {p.key: p.default for p in schema}
    clash = JOB_KEYS & set(defaults)
    if clash:
        raise TypeError(f"stage {name}: {sorted(clash)} are set by the submitter, not params")

    def declare(fn: StageFunction) -> StageFunction:
        body = stores_outputs(fn, outputs) if outputs else fn

        @functools.wraps(fn)
        def run(ctx: Any, job_params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
            start = time.monotonic()
            params = {**defaults, **job_params}
            uri = params.get("input")
            with contextlib.ExitStack() as stack:
                if is_remote(uri) and reads_input:
                    params["input_uri"] = uri
                    # Stages read files: an input in object storage or at a URL is
                    # fetched to this node first (once per node, verified) and held
                    # while the stage reads it (stages.inputs).
                    dag_id = getattr(getattr(ctx, "job", None), "dag_id", None)
                    copy = stack.enter_context(
                        fetched(
                            str(uri),
                            params,
                            progress=getattr(ctx, "progress", None),
                            dag_id=dag_id,
                        )
                    )
                    params["input"] = str(copy)
                try:
                    result = body(ctx, params, inputs)
                except PermanentError as exc:
                    local = str(params["input"])
                    if not is_remote(uri) or local not in str(exc):
                        raise
                    # The user named the object, not this node's copy of it.
                    raise type(exc)(str(exc).replace(local, str(uri))) from None
            if is_remote(uri) and reads_input and result.get("path") == params["input"]:
                result["path"] = uri  # the probe's facts name the input, not the copy
            if is_remote(uri) and collects:
                # The DAG has ended on this node.
                forget(str(uri), params, getattr(getattr(ctx, "job", None), "dag_id", None))
            result["stage_info"] = stage_info(getattr(ctx, "attempt", 1), time.monotonic() - start)
            return result

        stage(
            name,
            queue=queue,
            cost=cost,
            timeout=timeout,
            attempts=attempts,
            backoff=backoff,
            tags=tags,
            max_stalls=max_stalls,
            prefers=prefers,
            registry=registry,
        )(run)
        spec = (registry or REGISTRY).get(name)
        (catalog or CATALOG).add(
            MediaStage(name, params, schema, needs, outputs, kinds, essential, collects, spec)
        )
        declare_output_keys(outputs)
        return run

    return declare
