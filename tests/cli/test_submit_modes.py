"""`submit` on one machine: a bad --preset said once, --no-wait queues on the embedded
server for a later `mediapipe worker`, and -v logs the local pool's jobs."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import redis

from pipeline.keys import Keys
from tests.cli.conftest import FIXTURES, Cli


def test_a_bad_preset_is_one_line_for_all_inputs(cli: Cli, tmp_path: Path) -> None:
    inputs = []
    for i in range(3):
        inputs.append(str(tmp_path / f"photo{i}.jpg"))
        shutil.copy(FIXTURES / "large.jpg", inputs[-1])
    res = cli.run("submit", *inputs, "--preset", str(tmp_path / "missing.toml"))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert "missing.toml" in res.stderr and "photo" not in res.stderr


def test_no_wait_queues_on_the_embedded_server_and_a_worker_runs_it_later(
    cli: Cli, tmp_path: Path
) -> None:
    out = tmp_path / "renditions"
    res = cli.run("submit", str(FIXTURES / "large.jpg"), "--out", str(out), "--no-wait", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "submitted" and doc["dag_id"]
    assert res.stderr.count("\n") == 1 and "`mediapipe worker` runs them" in res.stderr
    time.sleep(1.0)
    status = json.loads(cli.run("status", doc["dag_id"], "--json").stdout)
    assert status["dag"]["state"] == "running" and not (out / "large" / "manifest.json").exists()

    cli.worker(
        "mp", "--concurrency", "1", "--no-gpu"
    )  # the same embedded server: no Redis URL given
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = json.loads(cli.run("status", doc["dag_id"], "--json").stdout)
        if status["dag"]["state"] != "running":
            break
        time.sleep(0.5)
    assert status["dag"]["state"] == "completed", status
    assert (out / "large" / "manifest.json").is_file()


def test_verbose_logs_a_line_per_job_start_and_end_of_the_local_pool(
    cli: Cli, tmp_path: Path
) -> None:
    res = cli.run("submit", str(FIXTURES / "large.jpg"), "--out", str(tmp_path / "o"), "-v")
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "mediapipe.jobs: job " in ln]
    started = [ln for ln in lines if "job started" in ln]
    done = [ln for ln in lines if "job done" in ln]
    assert started and len(started) == len(done), res.stderr
    assert any("stage=probe" in ln and "attempt=1/" in ln for ln in done)
    assert all(" duration=" in ln and " worker=" in ln and " dag=" in ln for ln in done)
    # Libraries' lines stay off below WARNING without --debug.
    assert "filelock" not in res.stderr and "pyvips" not in res.stderr
    quiet = cli.run("submit", str(FIXTURES / "large.jpg"), "--out", str(tmp_path / "q"))
    assert quiet.returncode == 0 and "mediapipe.jobs" not in quiet.stderr


def test_webhook_is_checked_before_anything_is_queued_and_kept_with_each_dag(
    fleet_cli: Cli, namespace: str, r: redis.Redis
) -> None:
    image = str(FIXTURES / "large.jpg")
    bad = fleet_cli.run("--namespace", namespace, "submit", image, "--webhook", "ftp://h/x")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "only http and https" in bad.stderr and "Traceback" not in bad.stderr
    assert not list(r.scan_iter(match=Keys(namespace).pattern(), count=1000))  # nothing queued

    def has_webhook(*args: str) -> bool:
        res = fleet_cli.run("--namespace", namespace, "submit", image, *args, "--no-wait", "--json")
        assert res.returncode == 0, res.stderr
        dag_id = json.loads(res.stdout)["dag_id"]
        return bool(r.hexists(Keys(namespace).dag(dag_id), "webhook"))

    # The DAG keeps its webhook (in the engine's own encoding); one without has none.
    assert has_webhook("--webhook", "https://hooks.example.com/mediapipe")
    assert not has_webhook()
