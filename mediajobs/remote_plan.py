"""Inputs the submitter cannot read (an ``s3://`` URI): probed where the file is, then
planned there.

``mediapipe submit s3://media/in/talk.mov`` cannot probe the object on the submitting
machine, so its DAG starts as two jobs and ``submit`` returns at once:

    locate (the probe stage: a worker fetches the input and probes it)
      -> plan (this module: the preset for the kind the probe found, its jobs added to
               the DAG at run time)

``plan`` builds the DAG the preset would have given a local file and adds it whole, its
``probe`` job a ``known_facts`` job that hands the facts on (the input is probed once), and
the staged SHA-256 the probe measured, so every later fetch of the object is checked
against the bytes that were probed. Bad media fails ``locate`` with the probe's one line;
``submit --wait`` reports it as a rejected input (exit 2), as it would a local file.
"""

from __future__ import annotations

from typing import Any

from mediajobs import presets
from pipeline.breaker import service_name
from pipeline.errors import BadInputError
from pipeline.model import Dag
from pipeline.registry import stage
from stages.contract import CATALOG
from stages.probe import KNOWN_FACTS

LOCATE = "locate"
PLAN = "plan"
PLAN_STAGE = "plan_input"


@stage(PLAN_STAGE, timeout=120)
def plan_input(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    facts = dict(inputs[LOCATE])
    uri = str(params["input"])
    wanted = params["preset"]
    chosen = presets.load(wanted, facts["kind"], uri) if isinstance(wanted, str) else wanted
    if chosen.get("kind") != facts["kind"]:
        raise BadInputError(
            f"{uri}: preset {chosen.get('name')} is for {chosen.get('kind')}, "
            f"the input is {facts['kind']}"
        )
    built = presets.build_dag(
        uri,
        str(params["out_dir"]),
        chosen,
        name=params.get("name"),
        priority=int(params.get("priority") or 0),
        storage=params.get("storage"),
        endpoint=params.get("endpoint"),
        input_sha256=facts["sha256"],
    )
    sub = ctx.new_children()
    for name, node in built.nodes.items():
        if node.stage == "probe":
            sub.add(name, KNOWN_FACTS, {"facts": facts}, options=node.options)
        else:
            sub.add(name, node.stage, node.params, after=node.children, options=node.options)
    ctx.add_children(sub)
    return {"preset": chosen.get("name"), "jobs": len(sub.nodes)}


def remote_dag(
    uri: str,
    out_dir: str,
    preset: str | dict[str, Any],
    *,
    name: str,
    priority: int = 0,
    idempotency_key: str | None = None,
    storage: str | None = None,
    endpoint: str | None = None,
) -> Dag:
    """The two-job DAG submitted for an input only the workers can read."""
    dag = Dag(
        idempotency_key=idempotency_key,
        meta={
            "input": uri,
            "out_dir": out_dir,
            "preset": preset if isinstance(preset, str) else preset.get("name"),
        },
    )
    fetch: dict[str, Any] = {"endpoint": endpoint} if endpoint else {}
    locate = dict(fetch)
    if uri.startswith("s3://"):
        # The first fetch of the object goes through its store's fleet-wide breaker.
        locate["service"] = service_name(uri, endpoint)
    CATALOG.get("probe").add_to(dag, {"input": uri, **locate}, name=LOCATE, priority=priority)
    plan: dict[str, Any] = {
        "input": uri,
        "out_dir": out_dir,
        "name": name,
        "preset": preset,
        "priority": priority,
        **fetch,
    }
    if storage:
        plan.update(storage=storage, service=service_name(storage, endpoint))
    dag.add(PLAN, PLAN_STAGE, plan, after=[LOCATE], priority=priority)
    return dag
