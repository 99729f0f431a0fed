"""`unserved`: which of a DAG's queues nothing serves now, and why."""

from __future__ import annotations

import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from pipeline.serving import (
    NO_WORKER,
    NO_WORKER_FOR_QUEUE,
    NO_WORKER_WITH_TAGS,
    PAUSED,
    WORKERS_STOPPING,
    unserved,
)


def _beat(broker: Broker, queues: str, *, tags: str = "", state: str = "running") -> None:
    broker.heartbeat(30.0, {"queues": queues, "tags": tags, "state": state, "capacity": 1})


def test_each_reason_is_named_and_a_served_dag_has_none(r: redis.Redis, namespace: str) -> None:
    import tests.workers.sample_stages  # noqa: F401  (registers t.echo, t.gpu_only)

    client = Client(r, namespace=namespace, registry=REGISTRY)
    dag = Dag()
    dag.add("a", "t.echo", {"x": 1})
    dag_id = client.submit(dag).dag_id
    keys = client.keys

    [u] = unserved(r, keys, dag_id)
    assert (u.queue, u.reason, u.jobs) == ("default", NO_WORKER, 1)
    assert u.message == "no worker is running: start one with `mediapipe worker`"

    other = Broker(r, namespace=namespace, registry=REGISTRY, worker_id="w-video")
    _beat(other, "video")
    [u] = unserved(r, keys, dag_id)
    assert u.reason == NO_WORKER_FOR_QUEUE and "serve video" in u.message

    mine = Broker(r, namespace=namespace, registry=REGISTRY, worker_id="w-default")
    _beat(mine, "default,video", state="stopping")
    assert unserved(r, keys, dag_id)[0].reason == WORKERS_STOPPING
    _beat(mine, "default,video")
    assert unserved(r, keys, dag_id) == []

    client.pause("default")
    [u] = unserved(r, keys, dag_id)
    assert u.reason == PAUSED and "mediapipe resume default" in u.message
    client.resume("default")
    assert unserved(r, keys, dag_id) == []

    gpu = Dag()
    gpu.add("g", "t.gpu_only", {})
    gpu_id = client.submit(gpu).dag_id
    [u] = unserved(r, keys, gpu_id)
    assert u.reason == NO_WORKER_WITH_TAGS and u.queue == "default@gpu"
    assert "--tags gpu" in u.message
    assert unserved(r, keys, dag_id) == []  # the other DAG's queue is served


def test_a_worker_whose_heartbeat_expired_is_named(r: redis.Redis, namespace: str) -> None:
    import tests.workers.sample_stages  # noqa: F401

    client = Client(r, namespace=namespace, registry=REGISTRY)
    dag = Dag()
    dag.add("a", "t.echo", {"x": 1})
    dag_id = client.submit(dag).dag_id
    gone = Broker(r, namespace=namespace, registry=REGISTRY, worker_id="w-gone")
    gone.heartbeat(0.05, {"queues": "default", "capacity": 1})
    import time

    time.sleep(0.2)
    [u] = unserved(r, client.keys, dag_id)
    assert u.reason == NO_WORKER and "the last heartbeat, from w-gone, expired" in u.message
