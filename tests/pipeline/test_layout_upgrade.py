"""DAGs in flight under the previous Redis layout finish under this one.

layout_v1.json is what schema 1 (c2e3b44) wrote for six DAGs at different points of
their run (see layout_v1_make.py, which made it). Loaded into a fresh namespace, today's
scripts must claim, complete, propagate results, reclaim the stalled job, retry the dead
one and settle every DAG, exactly as the old ones would have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.registry import Registry, stage
from tests.helpers import run_dag

DUMP = Path(__file__).with_name("layout_v1.json")


def load(r: redis.Redis, namespace: str) -> None:
    doc = json.loads(DUMP.read_text())
    assert doc["schema"] == 1
    prefix = "{" + namespace + "}:"
    for name, entry in doc["keys"].items():
        key, t, v = prefix + name, entry["type"], entry["value"]
        if t == "hash":
            r.hset(key, mapping=v)
        elif t == "set":
            r.sadd(key, *v)
        elif t == "zset":
            r.zadd(key, {m: s for m, s in v})
        elif t == "list":
            r.rpush(key, *v)
        elif t == "string":
            r.set(key, v)
        else:
            for eid, fields in v:
                r.xadd(key, fields, id=eid)


def test_dags_in_flight_under_schema_1_complete_after_the_upgrade(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    load(r, namespace)
    runs: list[str] = []

    @stage("step", registry=registry)
    def step(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        runs.append(ctx.job_id)
        return {"name": params["name"], "saw": sorted(inputs)}

    broker = Broker(r, namespace=namespace, registry=registry, lease=5.0)
    assert client.dag_state("dead") == "failed"
    client.retry_dead("dead/a")
    for dag in ("fresh", "half", "stalled", "dead", "soft", "single"):
        assert run_dag(client, broker, dag) == "completed", dag

    # Each job still to run ran once; the ones schema 1 finished did not run again.
    assert sorted(runs) == sorted(
        [
            "fresh/probe",
            "fresh/renditions",
            "fresh/manifest",
            "half/renditions",
            "half/manifest",
            "stalled/renditions",
            "stalled/manifest",
            "dead/a",
            "dead/b",
            "soft/b",
            "single/only",
        ]
    )
    for dag in ("fresh", "half", "stalled"):
        manifest = client.job(dag + "/manifest")
        assert manifest is not None
        assert manifest["result"] == {"name": "manifest", "saw": ["probe", "renditions"]}
        renditions = client.job(dag + "/renditions")
        assert renditions is not None and renditions["result"]["saw"] == ["probe"]
    assert client.job("dead/b")["result"] == {"name": "b", "saw": ["a"]}  # type: ignore[index]
    assert client.job("soft/b")["result"] == {"name": "b", "saw": []}  # type: ignore[index]
    assert client.job("stalled/renditions")["stalls"] == 1  # type: ignore[index]
    assert [d["id"] for d in client.dead()] == ["soft/a"]  # its DAG went on without it
    # The idempotency key written under schema 1 still names its DAG.
    from pipeline.model import Dag

    again = Dag(idempotency_key="fresh-key")
    again.add("x", "step", {"name": "x"})
    assert client.submit(again).dag_id == "fresh"


def test_retention_deletes_every_key_of_a_schema_1_dag(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    load(r, namespace)
    from pipeline.retention import Retention

    client.prune(Retention(completed_age=0.0, failed_age=0.0))
    left = sorted(k.decode() for k in r.scan_iter(match="{" + namespace + "}:*"))
    assert not [k for k in left if ":dag:dead" in k or ":job:dead/" in k], left
