"""Every `--json` output validates against docs/json-output.schema.json (schema 1), and is
typed: ints as ints, nested objects as objects, never JSON inside a string."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import redis

from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from tests.cli.conftest import FIXTURES, ROOT, Cli
from tests.workers.conftest import wait_for

SCHEMA = json.loads((ROOT / "docs" / "json-output.schema.json").read_text())


def check(doc: Any, kind: str) -> None:
    """``doc`` against the schema's definition ``kind``, and no JSON hidden in a string."""
    jsonschema.validate(doc, {**SCHEMA, "$ref": f"#/$defs/{kind}"})
    for text in _strings(doc):
        if text[:1] in "{[":
            try:
                json.loads(text)
            except ValueError:
                continue
            raise AssertionError(f"JSON inside a string: {text[:80]!r}")


def _strings(doc: Any) -> list[str]:
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, dict):
        return [s for v in doc.values() for s in _strings(v)]
    if isinstance(doc, list):
        return [s for v in doc for s in _strings(v)]
    return []


def _json(cli: Cli, namespace: str, *args: str) -> Any:
    res = cli.run("--namespace", namespace, *args)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", res.stderr
    return json.loads(res.stdout)


def test_status_dlq_and_workers_json_follow_the_schema(
    fleet_cli: Cli, namespace: str, r: redis.Redis
) -> None:
    import tests.workers.sample_stages  # noqa: F401  (t.echo, t.bad_input)

    client = Client(r, namespace=namespace, registry=REGISTRY)
    good = Dag(meta={"input": "/in/good.jpg", "preset": "image"})
    good.add("a", "t.echo", {"x": 1, "nested": {"y": [1, 2]}})
    good.add("b", "t.echo", {"x": 2}, after=["a"])
    bad = Dag(meta={"input": "/in/bad.jpg"})
    bad.add("a", "t.bad_input", {"path": "/in/bad.jpg"})
    good_id, bad_id = client.submit(good).dag_id, client.submit(bad).dag_id
    fleet_cli.worker(namespace, "--concurrency", "1", "--import", "tests.workers.sample_stages")
    wait_for(lambda: client.dag_state(good_id) == "completed", 60, "the good DAG")
    wait_for(lambda: client.dag_state(bad_id) == "failed", 60, "the bad DAG")

    overview = _json(fleet_cli, namespace, "status", "--json")
    check(overview, "status")
    assert [d["id"] for d in overview["dags"]] == [bad_id, good_id]
    assert overview["dags"][1]["completed"] == 2 and overview["dead"] == 1
    assert overview["queues"]["default"]["paused"] is False

    one = _json(fleet_cli, namespace, "status", good_id, "--json")
    check(one, "dag_status")
    assert one["dag"]["meta"]["input"] == one["dag"]["input"] == "/in/good.jpg"
    assert one["dag"]["state"] == "completed" and one["dag"]["percent"] == 100.0
    a = one["jobs"]["a"]
    assert a["params"] == {"x": 1, "nested": {"y": [1, 2]}}
    assert a["attempts"] == 1 and a["result"] is not None and a["error"] is None
    assert isinstance(a["started_ms"], int) and a["duration_s"] >= 0
    assert "owner" not in a  # the lease token never leaves Redis
    assert one["workers_alive"] == 1 and one["unserved"] == []

    dead = _json(fleet_cli, namespace, "dlq", "list", "--json")
    check(dead, "dead_list")
    assert dead["total"] == 1 and [j["id"] for j in dead["dead"]] == [f"{bad_id}/a"]
    assert dead["dead"][0]["error"]["type"] == "PermanentError"
    assert dead["dead"][0]["params"] == {"path": "/in/bad.jpg"}
    assert dead["dead"][0]["error"]["message"] == "/in/bad.jpg: not a media file"

    shown = _json(fleet_cli, namespace, "dlq", "show", f"{bad_id}/a", "--json")
    check(shown, "dead_show")
    assert shown["job"]["dead_since_ms"] >= shown["job"]["created_ms"]

    workers = _json(fleet_cli, namespace, "workers", "--json")
    check(workers, "workers")
    [w] = workers["workers"]
    assert w["queues"] == ["default"] and w["capacity"] == 1 and w["state"] == "running"
    assert w["pid"] == fleet_cli.procs[0].pid and isinstance(w["jobs_done"], int)


def test_status_of_a_dag_waiting_for_a_worker_names_why(
    fleet_cli: Cli, namespace: str, r: redis.Redis
) -> None:
    import tests.workers.sample_stages  # noqa: F401

    client = Client(r, namespace=namespace, registry=REGISTRY)
    dag = Dag()
    dag.add("a", "t.echo", {"x": 1})
    dag_id = client.submit(dag).dag_id
    doc = _json(fleet_cli, namespace, "status", dag_id, "--json")
    check(doc, "dag_status")
    assert doc["unserved"] == [
        {
            "queue": "default",
            "reason": "no_worker",
            "message": "no worker is running: start one with `mediapipe worker`",
            "jobs": 1,
        }
    ]
    plain = fleet_cli.run("--namespace", namespace, "status", dag_id)
    assert "no worker is running" in plain.stdout


def test_submit_json_is_one_document_per_input_with_its_dag_id(
    fleet_cli: Cli, namespace: str, tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    one = fleet_cli.run(
        "--namespace", namespace, "submit", str(FIXTURES / "clip.mp4"), "--out", out,
        "--no-wait", "--json",
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    doc = json.loads(one.stdout)
    check(doc, "submit")
    assert isinstance(doc, dict) and doc["status"] == "submitted" and len(doc["dag_id"]) == 16

    (tmp_path / "empty.jpg").write_bytes(b"")
    several = fleet_cli.run(
        "--namespace", namespace, "submit", str(FIXTURES / "clip.mp4"),
        str(tmp_path / "empty.jpg"), "--out", out, "--no-wait", "--json",
    )  # fmt: skip
    assert several.returncode == 2  # an input was rejected
    docs = json.loads(several.stdout)
    check(docs, "submit")
    assert [d["status"] for d in docs] == ["submitted", "failed"]
    assert docs[0]["dag_id"] and docs[1]["dag_id"] is None and docs[1]["error"]
    assert isinstance(docs[0]["input"]["width"], int)
