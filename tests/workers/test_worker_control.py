"""An operator's drain and stop reach a real worker process through Redis
(pipeline/worker_control.py): read with the heartbeat, acted on as SIGTERM and a second
SIGTERM would be."""

from __future__ import annotations

import time

import pytest
import redis

from pipeline.client import Client
from pipeline.model import Dag
from pipeline.worker_control import DRAIN, STOP, ask, asked, is_live
from tests.workers.conftest import Workers, wait_for


def _active(client: Client, job_id: str) -> bool:
    job = client.job(job_id)
    return job is not None and job["state"] == "active"


def _state(client: Client, worker_id: str) -> str:
    return next((w["state"] for w in client.workers() if w["id"] == worker_id), "")


def test_a_drain_finishes_the_running_job_takes_no_new_one_and_exits_zero(
    workers: Workers, stage_client: Client, r: redis.Redis
) -> None:
    w = workers.spawn("--concurrency", "1", "--grace", "30")
    worker_id = workers.worker_id(w)
    assert worker_id is not None and is_live(r, stage_client.keys, worker_id)
    running = Dag()
    running.add("long", "t.sleep", {"seconds": 2.5})
    stage_client.submit(running)
    wait_for(lambda: _active(stage_client, running.job_id("long")), what="the job to start")

    ask(r, stage_client.keys, worker_id, DRAIN)
    wait_for(lambda: _state(stage_client, worker_id) == "stopping", 6, "the node to drain")
    later = Dag()
    later.add("next", "t.echo", {"x": 1})
    stage_client.submit(later)

    assert w.wait(15) == 0, workers.log(w)
    assert stage_client.dag_state(running.id) == "completed"  # finished, not handed back
    job = stage_client.job(running.job_id("long"))
    assert job is not None and job["attempts"] == 1 and job["worker"] == worker_id
    nxt = stage_client.job(later.job_id("next"))
    assert nxt is not None and nxt["state"] == "waiting" and nxt["attempts"] == 0
    assert stage_client.workers() == []
    assert asked(r, stage_client.keys, worker_id) is None  # it cleaned up after itself
    assert "asked to drain" in workers.log(w)


def test_a_stop_hands_the_running_job_back_at_once(
    workers: Workers, stage_client: Client, r: redis.Redis
) -> None:
    w = workers.spawn("--concurrency", "1", "--grace", "30")
    worker_id = workers.worker_id(w)
    assert worker_id is not None
    dag = Dag()
    dag.add("long", "t.sleep", {"seconds": 20})
    stage_client.submit(dag)
    wait_for(lambda: _active(stage_client, dag.job_id("long")), what="the job to start")

    t0 = time.monotonic()
    ask(r, stage_client.keys, worker_id, STOP)
    ask(r, stage_client.keys, worker_id, DRAIN)  # does not soften a stop already asked
    assert w.wait(15) == 0, workers.log(w)
    assert time.monotonic() - t0 < 8  # not the 30 s grace, nor the job's 20 s
    job = stage_client.job(dag.job_id("long"))
    assert job is not None and job["state"] == "waiting" and job["attempts"] == 0
    assert stage_client.workers() == []
    assert "asked to stop" in workers.log(w)


def test_an_unknown_command_is_refused(r: redis.Redis, stage_client: Client) -> None:
    with pytest.raises(ValueError, match="unknown worker command"):
        ask(r, stage_client.keys, "host:1:abcdef", "reboot")
    assert asked(r, stage_client.keys, "host:1:abcdef") is None
