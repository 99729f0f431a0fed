"""Real worker processes under the faults that used to lose or repeat work: replies lost
past the socket timeout, an outage longer than the lease, a capability's workers gone."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import tests.workers.fault_stages  # noqa: F401  (registers the f.* stages)
from pipeline.client import Client
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from pipeline.server import EmbeddedServer
from tests.faultproxy import FaultProxy
from tests.workers.conftest import Workers, wait_for
from tests.workers.fault_stages import runs

FAULT_STAGES = ("--import", "tests.workers.fault_stages")


def _tally_dag(n: int, tally: Path, seconds: float = 0.0, stage: str = "f.tally") -> Dag:
    dag = Dag()
    for i in range(n):
        dag.add(f"j{i}", stage, {"n": i, "tally": str(tally), "seconds": seconds})
    return dag


def _assert_ran_once(client: Client, dag: Dag, tally: Path) -> None:
    jobs = client.jobs(dag.id)
    assert runs(tally) == {j["id"]: 1 for j in jobs.values()}
    for j in jobs.values():
        assert (j["state"], j["attempts"], j["stalls"]) == ("completed", 1, 0), j["id"]
    assert [e.type for e in client.events(dag.id)].count("completed") == len(jobs)


@pytest.mark.parametrize(
    ("transition", "action"), [("claim", "drop"), ("claim", "delay"), ("complete", "drop")]
)
def test_a_worker_whose_reply_is_lost_runs_each_job_once(
    transition: str,
    action: str,
    redis_url: str,
    workers: Workers,
    stage_client: Client,
    tmp_path: Path,
) -> None:
    tally = tmp_path / "tally"
    with FaultProxy(redis_url) as proxy:
        # lease 3 s: the worker's socket timeout is 1 s, and the delay is 2.5 s
        w = workers.spawn("--concurrency", "1", "--lease", "3", *FAULT_STAGES, url=proxy.url)
        proxy.on_reply(transition, 1, action, delay=2.5)
        dag = _tally_dag(3, tally)
        stage_client.submit(dag)
        wait_for(lambda: stage_client.dag_state(dag.id) == "completed", 30, "the DAG")
        assert proxy.fired() == 1
        _assert_ran_once(stage_client, dag, tally)
        assert w.poll() is None


def test_results_finished_during_an_outage_longer_than_the_lease_are_kept(
    own_server: EmbeddedServer, workers: Workers, namespace: str, tmp_path: Path
) -> None:
    """Redis away for twice the lease while a job finishes, with a second node alive:
    neither node reclaims the finished job; its result is recorded, the stage ran once."""
    client = Client(own_server.client(), namespace=namespace, registry=REGISTRY)
    workers.client = client
    tally = tmp_path / "tally"
    busy = workers.spawn("--concurrency", "1", "--lease", "2", *FAULT_STAGES, url=own_server.url)
    dag = _tally_dag(1, tally, seconds=1.0)
    client.submit(dag)
    job_id = dag.job_id("j0")
    wait_for(lambda: (client.job(job_id) or {}).get("state") == "active", what="the job to start")
    idle = workers.spawn("--concurrency", "1", "--lease", "2", *FAULT_STAGES, url=own_server.url)
    own_server.stop()
    time.sleep(4.5)  # the job finishes meanwhile; its lease deadline passes
    own_server.ensure_running()
    client = Client(own_server.client(), namespace=namespace, registry=REGISTRY)
    wait_for(lambda: client.dag_state(dag.id) == "completed", 30, "the DAG to complete")
    _assert_ran_once(client, dag, tally)
    assert busy.poll() is None and idle.poll() is None
    assert "discarded completion" not in workers.log(busy)


def test_jobs_claimed_from_a_capability_queue_are_reclaimed_when_its_workers_are_gone(
    workers: Workers, stage_client: Client, r: object, namespace: str, tmp_path: Path
) -> None:
    tally = tmp_path / "tally"
    cpu = workers.spawn("--concurrency", "1", "--lease", "1", *FAULT_STAGES)
    gpu = workers.spawn("--concurrency", "1", "--lease", "1", "--tags", "gpu", *FAULT_STAGES)
    dag = _tally_dag(1, tally, seconds=30.0, stage="f.gpu_tally")
    stage_client.submit(dag)
    job_id = dag.job_id("j0")
    wait_for(lambda: (stage_client.job(job_id) or {}).get("state") == "active", what="the start")
    os.killpg(gpu.pid, signal.SIGKILL)
    gpu.wait(10)
    # Only the CPU node is left; it does not serve default@gpu but reclaims it.
    wait_for(lambda: (stage_client.job(job_id) or {}).get("stalls") == 1, 10, "the reclaim")
    job = stage_client.job(job_id)
    assert job is not None and job["state"] == "waiting" and job["queue"] == "default@gpu"
    keys = Keys(namespace)
    assert stage_client.redis.zcard(keys.active("default@gpu")) == 0
    assert cpu.poll() is None


def test_a_running_worker_gives_up_after_the_configured_time_with_exit_3(
    own_server: EmbeddedServer, workers: Workers, namespace: str, tmp_path: Path
) -> None:
    client = Client(own_server.client(), namespace=namespace, registry=REGISTRY)
    workers.client = client
    os.environ["MEDIAPIPE_REDIS_GIVE_UP"] = "2"
    try:
        w = workers.spawn("--concurrency", "1", *FAULT_STAGES, url=own_server.url)
    finally:
        del os.environ["MEDIAPIPE_REDIS_GIVE_UP"]
    dag = _tally_dag(1, tmp_path / "tally", seconds=30.0)
    client.submit(dag)
    wait_for(lambda: (client.job(dag.job_id("j0")) or {}).get("state") == "active", what="start")
    own_server.stop()
    t0 = time.monotonic()
    assert w.wait(20) == 3
    assert 2.0 <= time.monotonic() - t0 < 12.0
    log = workers.log(w)
    assert "giving up" in log and "Traceback" not in log
    assert log.count("Redis unreachable (") == 1  # one notice, then one line to give up


def test_the_inline_runner_rides_out_a_restart_and_runs_each_job_once(
    own_server: EmbeddedServer, namespace: str, tmp_path: Path
) -> None:
    """The inline runner (and the batch lanes built on it) keep their jobs through an
    outage: a job finishing while Redis is away is reported when it is back."""
    import threading

    from pipeline.broker import Broker
    from workers.inline import InlineRunner

    def connect() -> object:
        return own_server.client(socket_timeout=1.0)

    client = Client(connect(), namespace=namespace, registry=REGISTRY)  # type: ignore[arg-type]
    broker = Broker(connect(), namespace=namespace, registry=REGISTRY, lease=20.0)  # type: ignore[arg-type]
    tally = tmp_path / "tally"
    dag = _tally_dag(3, tally, seconds=1.0)
    client.submit(dag)
    done = threading.Event()
    runner = InlineRunner(broker, idle_wait=0.2)
    thread = threading.Thread(target=runner.run, args=(done.is_set,), daemon=True)
    thread.start()
    wait_for(lambda: (client.job(dag.job_id("j0")) or {}).get("state") == "active", what="start")
    own_server.stop()
    time.sleep(7.0)  # longer than a call resends by itself; j0 finishes meanwhile
    own_server.ensure_running()
    client = Client(connect(), namespace=namespace, registry=REGISTRY)  # type: ignore[arg-type]
    wait_for(lambda: client.dag_state(dag.id) == "completed", 30, "the DAG to complete")
    done.set()
    thread.join(10)
    _assert_ran_once(client, dag, tally)
