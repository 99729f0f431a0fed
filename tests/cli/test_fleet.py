"""Fleet mode: a shared Redis, `mediapipe worker` processes, submit from anywhere."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

from pipeline.client import Client
from pipeline.registry import REGISTRY
from tests.cli.conftest import FIXTURES, Cli
from tests.workers.conftest import wait_for


def test_two_workers_process_a_submission_then_stop_cleanly_on_sigterm(
    fleet_cli: Cli,
    namespace: str,
    tmp_path: Path,
    r: object,
) -> None:
    for _ in range(2):
        fleet_cli.worker(namespace, "--concurrency", "1")
    out = tmp_path / "out"
    res = fleet_cli.run(
        "--namespace",
        namespace,
        "submit",
        str(FIXTURES / "clip.mp4"),
        str(FIXTURES / "no_audio.mp4"),
        "--out",
        str(out),
        "--wait",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    docs = json.loads(res.stdout)
    assert [d["status"] for d in docs] == ["completed", "completed"]
    for d in docs:
        for o in d["outputs"]:
            assert Path(o["path"]).stat().st_size == o["bytes"]
    for w in fleet_cli.procs:
        w.send_signal(signal.SIGTERM)
    for w in fleet_cli.procs:
        assert w.wait(30) == 0, w.stdout.read() if w.stdout else ""


def test_no_wait_prints_dag_ids_at_once(fleet_cli: Cli, namespace: str, tmp_path: Path) -> None:
    res = fleet_cli.run(
        "--namespace",
        namespace,
        "submit",
        str(FIXTURES / "clip.mp4"),
        "--out",
        str(tmp_path / "o"),
        "--no-wait",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "submitted" and len(doc["dag_id"]) == 16
    status = fleet_cli.run("--namespace", namespace, "status", doc["dag_id"], "--json")
    assert json.loads(status.stdout)["dag"]["state"] == "running"


def test_dlq_retry_brings_a_dead_dag_back_after_the_cause_is_fixed(
    fleet_cli: Cli,
    namespace: str,
    tmp_path: Path,
    redis_url: str,
) -> None:
    import redis

    src = tmp_path / "upload.mp4"
    shutil.copy(FIXTURES / "no_audio.mp4", src)
    out = tmp_path / "out"
    res = fleet_cli.run(
        "--namespace", namespace, "submit", str(src), "--out", str(out), "--no-wait", "--json"
    )
    dag_id = json.loads(res.stdout)["dag_id"]
    moved = tmp_path / "elsewhere.mp4"
    src.rename(moved)  # the input vanishes before a worker gets to it
    fleet_cli.worker(namespace, "--concurrency", "1")
    client = Client(redis.Redis.from_url(redis_url), namespace=namespace, registry=REGISTRY)
    wait_for(lambda: client.dag_state(dag_id) == "failed", 60, "the DAG to fail")

    listed = fleet_cli.run("--namespace", namespace, "dlq", "list")
    assert "probe" in listed.stdout and "no such file" in listed.stdout
    moved.rename(src)  # the cause is fixed
    retried = fleet_cli.run("--namespace", namespace, "dlq", "retry", "ALL")
    assert retried.returncode == 0 and "retried 1" in retried.stdout
    wait_for(lambda: client.dag_state(dag_id) == "completed", 60, "the DAG to complete")
    manifest = json.loads((out / "upload" / "manifest.json").read_text())
    assert {o["stage"] for o in manifest["outputs"]} >= {"video_ladder"}
    assert client.dead() == []


def test_unreachable_redis_exits_3(fleet_cli: Cli, tmp_path: Path) -> None:
    res = fleet_cli.run(
        "--redis",
        "redis://127.0.0.1:1",
        "submit",
        str(FIXTURES / "clip.mp4"),
        "--out",
        str(tmp_path / "o"),
    )
    assert res.returncode == 3
    assert "Redis unreachable" in res.stderr and "Traceback" not in res.stderr
