"""Cancelling a DAG, replaying its events late, and pruning finished DAGs."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from pipeline.broker import Broker, LeaseStatus
from pipeline.client import Client
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.registry import Registry, stage
from pipeline.retention import Retention
from tests.helpers import run_dag


def _stages(registry: Registry) -> None:
    @stage("step", registry=registry)
    def step(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
        ctx.progress(50, "halfway", force=True, fps=24.0)
        return str(ctx.job.name)


def test_cancel_stops_pending_jobs_and_tells_running_ones_to_stop(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _stages(registry)
    dag = Dag()
    dag.add("a", "step")
    dag.add("b", "step")
    dag.add("c", "step", after=["a", "b"])
    dag.add("later", "step", delay=60)
    client.submit(dag)
    (running,), _ = broker.claim(["default"])

    assert client.cancel(dag.id) == (3, 1)
    assert client.dag_state(dag.id) == "cancelled"
    assert broker.claim(["default"])[0] == []
    assert client.queue_counts("default") == {"waiting": 0, "active": 1, "delayed": 0, "paused": 0}
    told_to_stop = {running.id: LeaseStatus.CANCELLED}
    assert broker.extend({running.id: running.token}) == told_to_stop

    broker.complete(running, "finished anyway")
    info = client.dag(dag.id)
    assert info is not None and info["state"] == "cancelled" and info["finished"]
    states = {n: j["state"] for n, j in client.jobs(dag.id).items()}
    assert states == {
        running.name: "completed",
        "c": "cancelled",
        "later": "cancelled",
        ({"a", "b"} - {running.name}).pop(): "cancelled",
    }


def test_a_running_job_that_fails_after_cancel_is_not_retried(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _stages(registry)
    dag = Dag()
    dag.add("a", "step")
    client.submit(dag)
    (job,), _ = broker.claim(["default"])
    client.cancel(dag.id)
    assert broker.fail(job, RuntimeError("stopped")) == "cancelled"
    assert client.dead() == []
    assert client.queue_counts("default")["delayed"] == 0


def test_a_watcher_started_after_the_dag_finished_sees_all_its_events(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _stages(registry)
    dag = Dag()
    dag.add("a", "step")
    dag.add("b", "step", after=["a"])
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "completed"

    events = list(client.events(dag.id, follow=True))
    kinds = [(e.type, e.job.rsplit("/", 1)[-1]) for e in events]
    assert kinds == [
        ("submitted", ""),
        ("active", "a"),
        ("progress", "a"),
        ("completed", "a"),
        ("active", "b"),
        ("progress", "b"),
        ("completed", "b"),
        ("dag_completed", ""),
    ]
    progress = events[2].fields
    assert progress["percent"] == "50" and progress["message"] == "halfway"
    assert progress["fps"] == "24.0"


def test_a_live_watcher_follows_until_the_dag_ends(
    client: Client, broker: Broker, registry: Registry
) -> None:
    _stages(registry)
    dag = Dag()
    dag.add("a", "step")
    client.submit(dag)
    seen: list[str] = []
    t = threading.Thread(
        target=lambda: seen.extend(e.type for e in client.events(dag.id, follow=True, block=0.1))
    )
    t.start()
    time.sleep(0.2)
    run_dag(client, broker, dag.id)
    t.join(5)
    assert not t.is_alive()
    assert seen[-1] == "dag_completed"


def test_progress_rolls_up_to_the_dag(client: Client, broker: Broker, registry: Registry) -> None:
    _stages(registry)
    dag = Dag()
    dag.add("a", "step")
    dag.add("b", "step")
    client.submit(dag)
    (a,), _ = broker.claim(["default"])
    broker.progress(a, 50.0, "half", fps=30)
    info = client.dag(dag.id)
    assert info is not None and info["percent"] == 25.0
    job = client.job(a.id)
    assert job is not None and job["progress"] == {"percent": "50", "message": "half", "fps": "30"}
    broker.complete(a, None)
    info = client.dag(dag.id)
    assert info is not None and info["percent"] == 50.0


def test_retention_prunes_the_oldest_finished_dags_and_their_jobs(
    r: redis.Redis, namespace: str, client: Client, broker: Broker, registry: Registry
) -> None:
    _stages(registry)
    dags = []
    for _ in range(5):
        d = Dag()
        d.add("a", "step")
        d.add("b", "step", after=["a"])
        client.submit(d)
        assert run_dag(client, broker, d.id) == "completed"
        dags.append(d)
        time.sleep(0.002)  # finish times a millisecond apart: ties order by id
    deleted = client.prune(Retention(completed_count=2, budget=3))
    assert (deleted.dags, deleted.jobs) == (3, 6)
    assert [client.dag(d.id) is None for d in dags] == [True, True, True, False, False]
    assert client.job(dags[0].job_id("a")) is None
    assert r.exists(Keys(namespace).dag_events(dags[0].id)) == 0
    assert client.job(dags[4].job_id("b")) is not None
    # by age: everything finished more than 0 s ago
    assert client.prune(Retention(completed_count=100, completed_age=0.0)).jobs == 4
