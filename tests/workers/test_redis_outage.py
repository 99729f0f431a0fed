"""A worker rides out a Redis restart (same data) without being restarted itself."""

from __future__ import annotations

import time

from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from pipeline.server import EmbeddedServer
from tests.workers.conftest import Workers, wait_for


def _client(server: EmbeddedServer, namespace: str) -> Client:
    return Client(server.client(), namespace=namespace, registry=REGISTRY)


def test_worker_resumes_after_a_restart_while_idle(
    own_server: EmbeddedServer, workers: Workers, namespace: str
) -> None:
    workers.client = _client(own_server, namespace)
    w = workers.spawn("--concurrency", "1", url=own_server.url)
    own_server.stop()
    time.sleep(1.5)
    own_server.ensure_running()
    client = _client(own_server, namespace)
    dag = Dag()
    dag.add("after", "t.echo", {"x": 1})
    client.submit(dag)
    wait_for(lambda: client.dag_state(dag.id) == "completed", 30, "the DAG to complete")
    assert w.poll() is None
    assert "Traceback" not in workers.log(w)  # rode it out (a resend may hide the gap)


def test_a_job_finished_while_redis_was_down_is_recorded_when_it_returns(
    own_server: EmbeddedServer, workers: Workers, namespace: str
) -> None:
    client = _client(own_server, namespace)
    workers.client = client
    w = workers.spawn("--concurrency", "1", url=own_server.url)
    dag = Dag()
    dag.add("during", "t.sleep", {"seconds": 0.8})
    client.submit(dag)
    job_id = dag.job_id("during")
    wait_for(lambda: (client.job(job_id) or {}).get("state") == "active", what="job to start")
    own_server.stop()  # the job finishes while Redis is away
    time.sleep(2.0)
    own_server.ensure_running()
    client = _client(own_server, namespace)
    wait_for(lambda: client.dag_state(dag.id) == "completed", 30, "the DAG to complete")
    job = client.job(job_id)
    assert job is not None and job["attempts"] == 1 and job["stalls"] == 0
    assert job["result"]["end"] - job["result"]["start"] >= 0.8
    assert [e.type for e in client.events(dag.id)].count("completed") == 1
    assert w.poll() is None
