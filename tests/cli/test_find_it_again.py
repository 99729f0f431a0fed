"""Finding work again: `submit` names each DAG, `status` lists recent DAGs, `watch` says
why nothing moves."""

from __future__ import annotations

import json
import subprocess
import time

import redis

from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from tests.cli.conftest import Cli
from tests.workers.conftest import wait_for


def _submit(client: Client, name: str) -> str:
    dag = Dag(meta={"input": f"/in/{name}.jpg"})
    dag.add("a", "t.echo", {"x": 1})
    return client.submit(dag).dag_id


def test_status_lists_recent_dags_newest_first_with_limit_and_state(
    fleet_cli: Cli, namespace: str, r: redis.Redis
) -> None:
    import tests.workers.sample_stages  # noqa: F401

    client = Client(r, namespace=namespace, registry=REGISTRY)
    ids = [_submit(client, f"photo{i}") for i in range(4)]
    client.cancel(ids[0])

    res = fleet_cli.run("--namespace", namespace, "status", "--limit", "3")
    assert res.returncode == 0, res.stderr
    rows = [line.split() for line in res.stdout.splitlines() if line.strip()[:16] in ids]
    assert [row[0] for row in rows] == [ids[3], ids[2], ids[1]]
    assert rows[0][1] == "running" and rows[0][-1] == "photo3.jpg"

    cancelled = fleet_cli.run("--namespace", namespace, "status", "--state", "cancelled")
    assert ids[0] in cancelled.stdout and ids[1] not in cancelled.stdout
    doc = json.loads(
        fleet_cli.run("--namespace", namespace, "status", "--state", "running", "--json").stdout
    )
    assert [d["id"] for d in doc["dags"]] == [ids[3], ids[2], ids[1]]
    assert doc["states"] == ["running"] and doc["complete"] is True

    none = fleet_cli.run("--namespace", namespace, "status", "--state", "failed")
    assert "No failed DAGs found." in none.stdout
    bad = fleet_cli.run("--namespace", namespace, "status", "--state", "lost")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--state" in bad.stderr


def test_watch_says_in_one_line_why_nothing_serves_the_dag(
    fleet_cli: Cli, namespace: str, r: redis.Redis
) -> None:
    import tests.workers.sample_stages  # noqa: F401

    client = Client(r, namespace=namespace, registry=REGISTRY)
    dag_id = _submit(client, "lonely")
    client.pause("default")
    watch = subprocess.Popen(
        ["python", "-m", "mediajobs", "--namespace", namespace, "watch", dag_id],
        cwd=fleet_cli.cwd,
        env=fleet_cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(4)  # no worker, paused: both said, on one line
        fleet_cli.worker(namespace, "--concurrency", "1", "--import", "tests.workers.sample_stages")
        wait_for(lambda: client.workers(), 30, "the worker's first heartbeat")
        time.sleep(3)  # a worker now, but the queue is still paused
        client.resume("default")
        assert watch.wait(60) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
    out, err = watch.communicate()
    said = [line for line in err.splitlines() if line.startswith("mediapipe: waiting:")]
    assert said[0] == (
        "mediapipe: waiting: queue default is paused: `mediapipe resume default` hands its "
        "jobs out again; no worker is running: start one with `mediapipe worker`"
    ), err
    assert said[-1] == (
        "mediapipe: waiting: queue default is paused: `mediapipe resume default` hands its "
        "jobs out again"
    ), err
    assert len(said) == 2, err  # each change said once, not every poll
    assert out.strip().endswith(f"{dag_id}: completed")


def test_the_submit_summary_names_each_dag() -> None:
    from pathlib import Path

    from mediajobs.planning import Outcome, OutcomeStatus
    from mediajobs.submit import summary_lines

    done = Outcome(Path("a.jpg"), Path("out/a"), dag_id="6d0ea5aa51af494f")
    done.status, done.manifest = OutcomeStatus.COMPLETED, "out/a/manifest.json"
    rejected = Outcome(Path("b.jpg"), Path("out/b"), error="b.jpg: empty file (0 bytes)")
    rejected.status = OutcomeStatus.REJECTED
    header, first, second = summary_lines([done, rejected])
    assert header.split()[:3] == ["input", "dag", "status"]
    assert first.split()[:3] == ["a.jpg", "6d0ea5aa51af494f", "completed"]
    assert second.split()[:3] == ["b.jpg", "-", "failed"]
