"""GPU capability detection and routing, tested without a GPU (capabilities injected)."""

from __future__ import annotations

import os
import signal

from pipeline.client import Client
from pipeline.model import Dag
from tests.workers.conftest import Workers, wait_for
from workers.gpu import Capabilities, Gpu, detect


class FakeProbes:
    """An H100: CUDA, nvJPEG and NVDEC work; it has no NVENC engine."""

    def __init__(self, gpus: int = 1) -> None:
        self.gpus = [Gpu(i, "NVIDIA H100 80GB HBM3", 81559) for i in range(gpus)]
        self.tried: list[tuple[str, int]] = []

    def list_gpus(self) -> tuple[list[Gpu], str]:
        return self.gpus, "injected"

    def try_capability(self, name: str, gpu: int) -> tuple[bool, str]:
        self.tried.append((name, gpu))
        if name == "nvenc":
            return False, "trial run failed: No capable devices found"
        return True, "trial run succeeded"


def test_injected_readings_give_the_right_tags() -> None:
    caps = detect(FakeProbes())
    assert caps.tags() == ["gpu", "cuda", "nvjpeg", "nvdec"]
    assert "nvenc   no   trial run failed" in caps.describe()
    assert detect(FakeProbes(), disabled=True).tags() == []
    two = FakeProbes(gpus=2)
    limited = detect(two, only=[1])
    assert [g.index for g in limited.gpus] == [1] and two.tried[0] == ("cuda", 1)
    assert detect(FakeProbes(), only=[5]).tags() == []
    assert Capabilities().tags() == []


def test_this_machine_without_a_gpu_reports_why() -> None:
    caps = detect()
    if not caps.gpus:
        assert caps.tags() == [] and "no GPU found" in caps.describe()


def _workers_of(client: Client, dag: Dag) -> set[str]:
    return {j["worker"] for j in client.jobs(dag.id).values()}


def test_a_mixed_fleet_routes_each_job_as_declared(workers: Workers, stage_client: Client) -> None:
    gpu = workers.spawn("--concurrency", "1", "--tags", "gpu,cuda,nvdec")
    cpu = workers.spawn("--concurrency", "1")
    gpu_id, cpu_id = workers.worker_id(gpu), workers.worker_id(cpu)
    needs = Dag()
    for i in range(3):
        needs.add(f"n{i}", "t.gpu_only")
    prefers = Dag()
    for i in range(3):
        prefers.add(f"p{i}", "t.gpu_preferred")
    stage_client.submit(needs)
    stage_client.submit(prefers)
    for d in (needs, prefers):
        wait_for(lambda d=d: stage_client.dag_state(d.id) == "completed", 30, "the DAGs")
    assert _workers_of(stage_client, needs) == {gpu_id}
    assert _workers_of(stage_client, prefers) == {gpu_id}
    assert {j["queue"] for j in stage_client.jobs(prefers.id).values()} == {"default@gpu"}

    # CPU work also runs on the GPU box when it has idle slots.
    plain = Dag()
    for i in range(6):
        plain.add(f"e{i}", "t.sleep", {"seconds": 0.2})
    stage_client.submit(plain)
    wait_for(lambda: stage_client.dag_state(plain.id) == "completed", 30, "CPU work")
    assert _workers_of(stage_client, plain) == {gpu_id, cpu_id}


def test_with_no_gpu_worker_alive_gpu_preferring_jobs_run_on_cpu_workers(
    workers: Workers, stage_client: Client
) -> None:
    cpu = workers.spawn("--concurrency", "2")
    dag = Dag()
    for i in range(3):
        dag.add(f"p{i}", "t.gpu_preferred")
    stage_client.submit(dag)
    wait_for(lambda: stage_client.dag_state(dag.id) == "completed", 30, "the DAG")
    assert _workers_of(stage_client, dag) == {workers.worker_id(cpu)}


def test_jobs_waiting_for_a_gpu_that_went_away_fall_back_to_cpu(
    workers: Workers, stage_client: Client
) -> None:
    gpu = workers.spawn("--concurrency", "1", "--tags", "gpu")
    stage_client.pause("default@gpu")  # keep them waiting while the GPU box dies
    dag = Dag()
    for i in range(3):
        dag.add(f"p{i}", "t.gpu_preferred")
    strict = Dag()
    strict.add("g", "t.gpu_only")
    stage_client.submit(dag)
    stage_client.submit(strict)
    assert stage_client.queue_counts("default@gpu")["waiting"] == 4
    gpu_id = workers.worker_id(gpu) or ""
    os.killpg(gpu.pid, signal.SIGKILL)
    gpu.wait(10)
    # What the heartbeat's expiry does 10 s after the box dies, done now to keep it short.
    stage_client.redis.delete(stage_client.keys.worker(gpu_id))
    stage_client.resume("default@gpu")
    cpu = workers.spawn("--concurrency", "1")
    wait_for(lambda: stage_client.dag_state(dag.id) == "completed", 60, "the fallback")
    assert _workers_of(stage_client, dag) == {workers.worker_id(cpu)}
    events = [e.type for e in stage_client.events(dag.id)]
    assert events.count("rerouted") == 3
    # a job that strictly needs a GPU keeps waiting, and is reported as such
    assert stage_client.capability_gaps() == {"default@gpu": 1}
