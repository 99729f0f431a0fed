"""The worker node with real processes: crashes, kills, timeouts, shutdown, routing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from pipeline.client import Client
from pipeline.model import Dag
from tests.workers.conftest import Workers, wait_for


def _submit(client: Client, *jobs: tuple[str, str, dict[str, object]], **options: object) -> Dag:
    dag = Dag()
    for name, stage_name, params in jobs:
        dag.add(name, stage_name, params, **options)  # type: ignore[arg-type]
    client.submit(dag)
    return dag


def _finished(client: Client, dag: Dag, timeout: float = 30.0) -> str:
    return str(
        wait_for(
            lambda: client.dag_state(dag.id) if client.dag_state(dag.id) != "running" else None,
            timeout,
            f"DAG {dag.id} to finish",
        )
    )


def test_kill_9_mid_job_another_worker_completes_it_once(
    workers: Workers, stage_client: Client
) -> None:
    a = workers.spawn("--concurrency", "1", "--lease", "1")
    dag = _submit(stage_client, ("slow", "t.sleep", {"seconds": 1.5}))
    job_id = dag.job_id("slow")
    wait_for(lambda: stage_client.job(job_id)["state"] == "active", what="job to start")  # type: ignore[index]
    assert stage_client.job(job_id)["worker"] == workers.worker_id(a)  # type: ignore[index]
    os.killpg(a.pid, signal.SIGKILL)  # the whole box dies: worker, pool, the job's process
    a.wait(10)

    b = workers.spawn("--concurrency", "1", "--lease", "1")
    assert _finished(stage_client, dag) == "completed"
    job = stage_client.job(job_id)
    assert job is not None
    assert job["worker"] == workers.worker_id(b)
    assert job["stalls"] == 1 and job["attempts"] == 2
    events = [e.type for e in stage_client.events(dag.id)]
    assert events.count("completed") == 1 and events.count("stalled") == 1


def test_a_child_that_segfaults_or_exits_is_retried_and_the_worker_lives_on(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    w = workers.spawn("--concurrency", "1")
    dag = _submit(
        stage_client,
        ("crash", "t.segfault", {"flag": str(tmp_path / "segv")}),
        ("quit", "t.exit", {"flag": str(tmp_path / "exit")}),
        ("after", "t.echo", {"x": 1}),
    )
    assert _finished(stage_client, dag) == "completed"
    jobs = stage_client.jobs(dag.id)
    assert jobs["crash"]["result"] == "survived" and jobs["crash"]["attempts"] == 2
    assert jobs["quit"]["result"] == "survived" and jobs["quit"]["attempts"] == 2
    assert jobs["after"]["state"] == "completed"
    failures = [e.fields["error"] for e in stage_client.events(dag.id) if e.type == "failed"]
    assert len(failures) == 2
    assert any("signal 11" in f for f in failures) and any("exit code 1" in f for f in failures)
    assert w.poll() is None  # the worker is still up


def test_a_poison_job_ends_dead_while_other_jobs_keep_flowing(
    workers: Workers, stage_client: Client
) -> None:
    w = workers.spawn("--concurrency", "1")
    poison = _submit(stage_client, ("p", "t.poison", {}))
    good = [_submit(stage_client, (f"g{i}", "t.echo", {"i": i})) for i in range(5)]
    assert _finished(stage_client, poison) == "failed"
    for d in good:
        assert _finished(stage_client, d) == "completed"
    dead = stage_client.dead()
    assert [d["id"] for d in dead] == [poison.job_id("p")]
    assert dead[0]["attempts"] == 2 and dead[0]["error"]["type"] == "WorkerCrashedError"
    assert w.poll() is None


def test_timeout_kills_the_job_and_the_process_it_started_then_retries(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    workers.spawn("--concurrency", "1")
    pidfile = tmp_path / "grandchild.pid"
    dag = _submit(stage_client, ("hang", "t.spawn_and_hang", {"pidfile": str(pidfile)}))
    assert _finished(stage_client, dag) == "completed"
    job = stage_client.job(dag.job_id("hang"))
    assert job is not None and job["result"] == "second attempt" and job["attempts"] == 2
    failed = [e for e in stage_client.events(dag.id) if e.type == "failed"]
    assert "JobTimeoutError" in failed[0].fields["error"]
    grandchild = int(pidfile.read_text())
    gone = not psutil.pid_exists(grandchild) or (
        psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    )
    assert gone, f"subprocess {grandchild} survived the timeout"


@pytest.mark.serial  # alone under xdist: the whole shutdown must take < 3 s
def test_sigterm_hands_a_long_job_back_at_once_and_exits_zero(
    workers: Workers, stage_client: Client
) -> None:
    a = workers.spawn("--concurrency", "1", "--grace", "0.3")
    dag = _submit(stage_client, ("long", "t.sleep", {"seconds": 3}))
    job_id = dag.job_id("long")
    wait_for(lambda: stage_client.job(job_id)["state"] == "active", what="job to start")  # type: ignore[index]
    t0 = time.monotonic()
    a.send_signal(signal.SIGTERM)
    assert a.wait(10) == 0, workers.log(a)
    assert time.monotonic() - t0 < 3.0
    job = stage_client.job(job_id)
    assert job is not None and job["state"] == "waiting" and job["attempts"] == 0
    assert stage_client.workers() == []  # it deregistered

    b = workers.spawn("--concurrency", "1")
    assert _finished(stage_client, dag) == "completed"
    job = stage_client.job(job_id)
    assert job is not None and job["attempts"] == 1 and job["stalls"] == 0
    assert job["worker"] == workers.worker_id(b)
    b.send_signal(signal.SIGTERM)
    assert b.wait(10) == 0


def test_cost_aware_admission_never_overcommits_the_slots(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    workers.spawn("--concurrency", "2")
    dag = Dag()
    dag.add("big", "t.sleep", {"seconds": 0.6, "marks": str(marks)}, cost=2)
    dag.add("s1", "t.sleep", {"seconds": 0.6, "marks": str(marks)})
    dag.add("s2", "t.sleep", {"seconds": 0.6, "marks": str(marks)})
    stage_client.submit(dag)
    assert _finished(stage_client, dag) == "completed"

    def span(name: str) -> tuple[float, float]:
        return (
            float((marks / f"{name}.start").read_text()),
            float((marks / f"{name}.end").read_text()),
        )

    big, s1, s2 = span("big"), span("s1"), span("s2")
    for small in (s1, s2):
        assert small[1] <= big[0] or big[1] <= small[0], "cost-2 job overlapped a cost-1 job"
    # the two cost-1 jobs did share the two slots
    assert s1[0] < s2[1] and s2[0] < s1[1]


def test_a_cpu_bound_job_far_longer_than_the_lease_is_never_reclaimed(
    workers: Workers, stage_client: Client
) -> None:
    workers.spawn("--concurrency", "1", "--lease", "0.4")
    workers.spawn("--concurrency", "1", "--lease", "0.4")  # a second node hunting stalls
    dag = _submit(stage_client, ("cpu", "t.spin", {"seconds": 2.0}))
    assert _finished(stage_client, dag) == "completed"
    job = stage_client.job(dag.job_id("cpu"))
    assert job is not None and job["stalls"] == 0 and job["attempts"] == 1
    assert [e.type for e in stage_client.events(dag.id)].count("stalled") == 0


def test_tagged_stages_run_only_on_workers_with_the_tag(
    workers: Workers, stage_client: Client
) -> None:
    cpu = workers.spawn("--concurrency", "1")
    dag = _submit(stage_client, *[(f"g{i}", "t.gpu_only", {}) for i in range(3)])
    wait_for(
        lambda: stage_client.capability_gaps() == {"default@gpu": 3},
        what="the GPU jobs to be reported as waiting for a capability",
    )
    gpu = workers.spawn("--concurrency", "1", "--tags", "gpu")
    plain = _submit(stage_client, *[(f"e{i}", "t.echo", {}) for i in range(4)])
    assert _finished(stage_client, dag) == "completed"
    assert _finished(stage_client, plain) == "completed"
    gpu_id, cpu_id = workers.worker_id(gpu), workers.worker_id(cpu)
    assert {j["worker"] for j in stage_client.jobs(dag.id).values()} == {gpu_id}
    assert {j["worker"] for j in stage_client.jobs(plain.id).values()} <= {gpu_id, cpu_id}
    assert stage_client.capability_gaps() == {}


def test_fan_out_from_a_pool_child_reaches_the_parent(
    workers: Workers, stage_client: Client
) -> None:
    workers.spawn("--concurrency", "2")
    dag = Dag()
    dag.add("split", "t.fan_out", {"n": 3})
    dag.add("join", "t.collect", after=["split"])
    stage_client.submit(dag)
    assert _finished(stage_client, dag) == "completed"
    assert stage_client.job(dag.job_id("join"))["result"] == [  # type: ignore[index]
        "part0",
        "part1",
        "part2",
        "split",
    ]


def test_metrics_move_during_a_run_and_match_the_final_state(
    workers: Workers, stage_client: Client
) -> None:
    import re
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workers.spawn("--concurrency", "2", "--metrics-port", str(port))
    base = f"http://127.0.0.1:{port}"

    def scrape() -> dict[str, float]:
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        out: dict[str, float] = {}
        for name, labels, value in re.findall(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", text, re.M):
            stage = re.search(r'stage="([^"]+)"', labels)
            key = f"{name}:{stage.group(1)}" if stage else name
            out[key] = out.get(key, 0.0) + float(value)
        return out

    assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
    assert urllib.request.urlopen(f"{base}/readyz", timeout=5).status == 200
    dag = _submit(
        stage_client,
        *[(f"s{i}", "t.sleep", {"seconds": 0.3}) for i in range(6)],
        ("bad", "t.bad_input", {"path": "x.jpg"}),
    )
    seen = {scrape().get("mediapipe_jobs_completed_total:t.sleep", 0.0)}
    while stage_client.dag_state(dag.id) == "running":
        seen.add(scrape().get("mediapipe_jobs_completed_total:t.sleep", 0.0))
        time.sleep(0.1)
    final = scrape()
    assert len(seen) >= 3, seen  # the counter moved during the run
    assert final["mediapipe_jobs_completed_total:t.sleep"] == 6
    assert final["mediapipe_jobs_started_total:t.sleep"] == 6
    assert final["mediapipe_jobs_dead_total:t.bad_input"] == 1
    assert final["mediapipe_job_duration_seconds_count:t.sleep"] == 6
    assert final["mediapipe_job_duration_seconds_sum:t.sleep"] >= 6 * 0.3
    assert final["mediapipe_worker_capacity"] == 2
    completed = sum(1 for j in stage_client.jobs(dag.id).values() if j["state"] == "completed")
    assert completed == 6


def test_running_workers_fire_a_schedule_once_per_tick(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    import shutil

    from pipeline.schedules import Schedules

    drop = tmp_path / "drop"
    drop.mkdir()
    fixtures = Path(__file__).resolve().parents[2] / "fixtures"
    shutil.copy(fixtures / "cmyk.jpg", drop / "a.jpg")
    for _ in range(2):  # two nodes run the scheduler; the tick fires once
        workers.spawn("--concurrency", "1")
    Schedules(stage_client).add(
        "drop", str(drop / "*.jpg"), every=1, preset="image", out=str(tmp_path / "out")
    )
    wait_for(
        lambda: (tmp_path / "out" / "a" / "manifest.json").exists(),
        60,
        "the scheduled DAG to finish",
    )
    shutil.copy(fixtures / "alpha.png", drop / "b.jpg")  # the folder is watched
    wait_for(lambda: (tmp_path / "out" / "b" / "manifest.json").exists(), 60, "the new file")
    time.sleep(2.5)  # more ticks pass: nothing is submitted twice
    inputs = [
        stage_client.dag(d.decode())["meta"]["input"]  # type: ignore[index]
        for d in stage_client.redis.zrange(stage_client.keys.dags_done, 0, -1)
    ]
    assert sorted(Path(i).name for i in inputs) == ["a.jpg", "b.jpg"]
