"""Batch lanes: many jobs of one stage claimed at once and run together (the GPU image path
uses one), each job still with its own result, failure and dead-letter entry."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.model import Dag, JobOptions
from pipeline.registry import REGISTRY
from tests.workers.conftest import Workers, wait_for
from workers.batch import BatchRunner


def _dags(client: Client, params: list[dict[str, Any]]) -> list[str]:
    dags = []
    for p in params:
        dag = Dag()
        dag.add("b", "t.batchable", p)
        dags.append(dag)
    client.submit_many(dags)
    return [d.id for d in dags]


def _result(client: Client, dag_id: str) -> dict[str, Any]:
    return client.jobs(dag_id)["b"]


@pytest.fixture
def lane(r: Any, namespace: str) -> BatchRunner:
    broker = Broker(r, namespace=namespace, registry=REGISTRY, lease=5.0)
    spec = next(b for b in REGISTRY.batches() if b.stage == "t.batchable")
    return BatchRunner(broker, ["default"], spec, registry=REGISTRY, tags=["tbatch"])


def test_a_lane_claims_and_runs_jobs_in_batches_each_with_its_own_outcome(
    r: Any, namespace: str, lane: BatchRunner
) -> None:
    client = Client(r, namespace=namespace, registry=REGISTRY)
    params: list[dict[str, Any]] = [{"n": i} for i in range(20)]
    params[3]["bad"] = True
    params[5]["decline"] = True
    ids = _dags(client, params)
    assert lane.run(lambda: False, max_jobs=20) == 20

    states = {i: client.dag_state(d) for i, d in enumerate(ids)}
    assert states[3] == "failed"
    assert all(s == "completed" for i, s in states.items() if i != 3)
    dead = client.dead()
    assert [d["id"] for d in dead] == [f"{ids[3]}/b"]
    assert dead[0]["error"]["message"] == "3: corrupt"
    results = {i: _result(client, d)["result"] for i, d in enumerate(ids) if i != 3}
    # 20 jobs with up to 8 per claim: batches of 8, 8, 4; the declined one ran alone.
    assert sorted({res["batch"] for i, res in results.items() if i != 5}) == [4, 8]
    assert results[5]["batch"] == 0
    assert lane.batches == 3
    assert [res["n"] for _, res in sorted(results.items())] == [i for i in range(20) if i != 3]


def test_a_batch_that_fails_as_a_whole_runs_its_jobs_one_by_one(
    r: Any, namespace: str, lane: BatchRunner
) -> None:
    client = Client(r, namespace=namespace, registry=REGISTRY)
    ids = _dags(client, [{"n": 0, "explode": True}, {"n": 1}, {"n": 2}])
    assert lane.run(lambda: False, max_jobs=3) == 3
    for d in ids:
        assert client.dag_state(d) == "completed"
        assert _result(client, d)["result"]["batch"] == 0
        assert _result(client, d)["attempts"] == 1


def test_a_worker_with_the_capability_runs_a_lane_that_gets_the_routed_jobs(
    workers: Workers, stage_client: Client
) -> None:
    gpu = workers.spawn("--tags", "tbatch", "--concurrency", "1")
    # The node's registry entry and the lane's: the lane alone serves default@tbatch.
    entries = wait_for(
        lambda: [w for w in stage_client.workers() if "default@tbatch" in w.get("queues", "")],
        30,
        "the lane to register",
    )
    assert len(entries) == 1 and entries[0].get("lane") == "batch:t.batchable"
    node = next(w for w in stage_client.workers() if w.get("pid") == str(gpu.pid))
    assert "default@tbatch" not in node["queues"].split(",")

    ids = _dags(stage_client, [{"n": i} for i in range(12)])
    for d in ids:
        wait_for(lambda d=d: stage_client.dag_state(d) == "completed", 30, f"DAG {d}")
    results = [_result(stage_client, d) for d in ids]
    assert {res["queue"] for res in results} == {"default@tbatch"}
    assert max(res["result"]["batch"] for res in results) > 1  # claimed many at once
    assert {res["result"]["pid"] for res in results} == {int(entries[0]["pid"])}

    gpu.send_signal(signal.SIGTERM)
    assert gpu.wait(30) == 0
    # Both deregistered: new jobs of the stage no longer wait for this box.
    wait_for(lambda: not stage_client.workers(), 15, "the registry to empty")


def test_a_lane_that_dies_is_started_again_and_its_jobs_still_complete(
    workers: Workers, stage_client: Client
) -> None:
    gpu = workers.spawn("--tags", "tbatch", "--concurrency", "1")

    def lane_pid() -> int | None:
        for w in stage_client.workers():
            if w.get("lane") == "batch:t.batchable":
                return int(w["pid"])
        return None

    first = wait_for(lane_pid, 30, "the lane to register")
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (pid := lane_pid()) and pid != first and pid, 30, "a new lane")
    assert second != first
    ids = _dags(stage_client, [{"n": i} for i in range(4)])
    for d in ids:
        wait_for(lambda d=d: stage_client.dag_state(d) == "completed", 60, f"DAG {d}")
    assert {_result(stage_client, d)["result"]["pid"] for d in ids} == {second}
    gpu.send_signal(signal.SIGTERM)
    assert gpu.wait(30) == 0


def test_a_batch_past_its_timeout_fails_as_timed_out_and_the_lane_starts_again(
    workers: Workers, stage_client: Client
) -> None:
    gpu = workers.spawn("--tags", "tbatch", "--concurrency", "1")
    wait_for(lambda: any(w.get("lane") for w in stage_client.workers()), 30, "the lane to register")
    hung = Dag()
    hung.add("b", "t.batchable", {"n": 0, "hang": True}, options=JobOptions(timeout=1.0))
    stage_client.submit(hung)
    wait_for(lambda: stage_client.dag_state(hung.id) == "failed", 30, "the timeout")
    job = _result(stage_client, hung.id)
    assert job["state"] == "dead" and job["error"]["type"] == "JobTimeoutError"
    assert job["attempts"] == 1
    # A new lane took over: jobs submitted now complete there.
    ids = _dags(stage_client, [{"n": i} for i in range(3)])
    for d in ids:
        wait_for(lambda d=d: stage_client.dag_state(d) == "completed", 60, f"DAG {d}")
    assert "ran past 1 s; failing them and restarting the lane" in workers.log(gpu)
    gpu.send_signal(signal.SIGTERM)
    assert gpu.wait(30) == 0
