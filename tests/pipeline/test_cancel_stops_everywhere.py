"""A cancelled DAG stays stopped: jobs handed back after the cancel (Ctrl-C, a SIGTERM
drain, a breaker deferral) end as cancelled, and a running job cannot fan out into it."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import PermanentError
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.registry import Registry, stage


def _stages(registry: Registry) -> None:
    @stage("step", registry=registry)
    def step(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
        return str(ctx.job.name)


@pytest.mark.parametrize("delay", [0.0, 5.0], ids=["release", "defer"])
def test_a_job_handed_back_after_its_dag_was_cancelled_ends_cancelled(
    client: Client, broker: Broker, registry: Registry, delay: float
) -> None:
    _stages(registry)
    dag = Dag()
    dag.add("a", "step")
    dag.add("b", "step")
    dag.add("c", "step", after=["a", "b"])
    client.submit(dag)
    held, _ = broker.claim(["default"], 2)
    assert len(held) == 2

    assert client.cancel(dag.id) == (1, 2)
    broker.release(held, delay=delay, reason="storage (open)" if delay else "")

    assert broker.claim(["default"], 10)[0] == []
    assert client.queue_counts("default") == {
        "waiting": 0,
        "active": 0,
        "delayed": 0,
        "paused": 0,
    }
    assert {n: j["state"] for n, j in client.jobs(dag.id).items()} == {
        "a": "cancelled",
        "b": "cancelled",
        "c": "cancelled",
    }
    info = client.dag(dag.id)
    assert info is not None and info["state"] == "cancelled" and info["finished"]
    assert int(info["cancelled"]) == 3 and int(info["open"]) == 0


def test_a_running_job_cannot_fan_out_into_a_cancelled_dag(
    client: Client, broker: Broker, registry: Registry, r: redis.Redis, namespace: str
) -> None:
    _stages(registry)
    dag = Dag()
    dag.add("split", "step")
    dag.add("join", "step", after=["split"])
    client.submit(dag)
    (job,), _ = broker.claim(["default"])
    client.cancel(dag.id)
    before = client.dag(dag.id)

    sub = Dag(dag.id)
    sub.add("part0", "step")
    sub.add("part1", "step")
    with pytest.raises(PermanentError, match="cancelled"):
        broker.add_children(job, sub)

    keys = Keys(namespace)
    assert not r.exists(keys.job(sub.job_id("part0")), keys.job(sub.job_id("part1")))
    assert sorted(client.jobs(dag.id)) == ["join", "split"]
    assert client.dag(dag.id) == before
    assert broker.claim(["default"], 10)[0] == []
