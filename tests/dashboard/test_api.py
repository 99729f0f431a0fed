"""The dashboard's JSON API through Flask's test client, against the suite's real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from mediajobs.dashboard.app import create_app
from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import PermanentError
from pipeline.model import Dag
from pipeline.registry import Registry, stage
from tests.dashboard.conftest import TOKEN
from tests.helpers import run_dag

AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVIL_NAME = '<img src=x onerror="alert(1)">.mov'


@pytest.fixture
def stages(registry: Registry) -> Registry:
    @stage("ok", registry=registry)
    def ok(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
        return "done"

    @stage("broken", registry=registry)
    def broken(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        raise PermanentError(f"{params['path']}: not a media file")

    return registry


@pytest.fixture
def web(client: Client) -> FlaskClient:
    return create_app(client, token=TOKEN).test_client()


def _dead_dag(client: Client, broker: Broker) -> Dag:
    dag = Dag(meta={"input": EVIL_NAME})
    dag.add("probe", "broken", {"path": EVIL_NAME})
    dag.add("manifest", "ok", after=["probe"])
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "failed"
    return dag


def test_overview_shows_queues_dags_dead_jobs_and_events(
    web: FlaskClient, client: Client, broker: Broker, stages: Registry
) -> None:
    good = Dag(meta={"input": "a.jpg"})
    good.add("a", "ok")
    good.add("b", "ok", after=["a"])
    client.submit(good)
    assert run_dag(client, broker, good.id) == "completed"
    bad = _dead_dag(client, broker)

    resp = web.get("/api/overview")
    assert resp.status_code == 200
    o = resp.get_json()
    assert o["namespace"] == client.keys.namespace
    assert o["reads_need_token"] is False
    [q] = o["queues"]
    assert q == {
        "name": "default",
        "waiting": 0,
        "active": 0,
        "delayed": 0,
        "failed": 0,
        "dead": 1,
        "paused": False,
        "counts_truncated": False,
    }
    assert o["dead_total"] == 1
    states = {d["id"]: (d["state"], d["percent"]) for d in o["dags"]}
    assert states == {good.id: ("completed", 100.0), bad.id: ("failed", 0.0)}
    [dead] = o["dead"]
    assert dead["id"] == bad.job_id("probe")
    assert dead["error"]["type"] == "PermanentError"
    assert dead["error"]["message"] == f"{EVIL_NAME}: not a media file"
    assert dead["params"] == {"path": EVIL_NAME}
    assert (dead["stage"], dead["state"], dead["dag"]) == ("broken", "dead", bad.id)
    kinds = [e["ev"] for e in o["events"]]
    assert {"submitted", "dag_completed", "dag_failed", "dead"} <= set(kinds)
    assert o["schedules"] == [] and o["workers"] == []


def test_dag_detail_has_jobs_and_edges_but_no_lease_token(
    web: FlaskClient, client: Client, broker: Broker, stages: Registry
) -> None:
    bad = _dead_dag(client, broker)
    d = web.get(f"/api/dags/{bad.id}").get_json()
    assert d["state"] == "failed" and d["meta"]["input"] == EVIL_NAME
    jobs = {j["name"]: j for j in d["jobs"]}
    assert jobs["probe"]["state"] == "dead"
    assert jobs["manifest"]["state"] == "upstream_failed"
    assert jobs["manifest"]["deps"] == {bad.job_id("probe"): "dead"}
    assert all("owner" not in j for j in d["jobs"])
    assert web.get("/api/dags/nope").status_code == 404


def test_actions_need_the_token_and_change_nothing_without_it(
    web: FlaskClient, client: Client, broker: Broker, stages: Registry
) -> None:
    bad = _dead_dag(client, broker)
    job = bad.job_id("probe")

    none = web.post("/api/dlq/retry", json={"job": job})
    assert none.status_code == 401
    assert none.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = web.post("/api/dlq/retry", json={"job": job}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert web.post("/api/dlq/purge").status_code == 401
    assert web.post("/api/queues/pause", json={"queue": "default"}).status_code == 401
    assert web.post("/api/dags/cancel", json={"dag": bad.id}).status_code == 401
    assert [j["id"] for j in client.dead()] == [job]
    assert client.queue_counts("default")["paused"] == 0

    ok = web.post("/api/dlq/retry", json={"job": job}, headers=AUTH)
    assert ok.status_code == 200 and ok.get_json()["ok"] is True
    assert client.dead() == []
    assert client.dag_state(bad.id) == "running"
    again = web.post("/api/dlq/retry", json={"job": job}, headers=AUTH)
    assert again.status_code == 409
    assert "not in the dead-letter queue" in again.get_json()["error"]


def test_a_form_field_carries_the_token_too(
    web: FlaskClient, client: Client, broker: Broker, stages: Registry
) -> None:
    bad = _dead_dag(client, broker)
    resp = web.post("/api/dlq/retry", data={"job": bad.job_id("probe"), "token": TOKEN})
    assert resp.status_code == 200
    assert client.dead() == []


def test_pause_resume_cancel_and_purge(
    web: FlaskClient, client: Client, broker: Broker, stages: Registry
) -> None:
    _dead_dag(client, broker)
    assert web.post("/api/queues/pause", json={"queue": "default"}, headers=AUTH).status_code == 200
    assert client.queue_counts("default")["paused"] == 1
    assert web.get("/api/overview").get_json()["queues"][0]["paused"] is True
    assert (
        web.post("/api/queues/resume", json={"queue": "default"}, headers=AUTH).status_code == 200
    )
    assert client.queue_counts("default")["paused"] == 0
    missing = web.post("/api/queues/pause", json={"queue": "nope"}, headers=AUTH)
    assert missing.status_code == 404
    assert web.post("/api/queues/pause", json={}, headers=AUTH).status_code == 400

    waiting = Dag()
    waiting.add("a", "ok")
    client.submit(waiting)
    resp = web.post("/api/dags/cancel", json={"dag": waiting.id}, headers=AUTH)
    assert resp.status_code == 200
    assert resp.get_json()["result"] == {"cancelled": 1, "told_to_stop": 0}
    assert client.dag_state(waiting.id) == "cancelled"
    assert web.post("/api/dags/cancel", json={"dag": "nope"}, headers=AUTH).status_code == 404

    resp = web.post("/api/dlq/purge", headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["result"] == 1
    assert client.dead() == []


def test_schedules_are_listed_from_their_hash(
    web: FlaskClient, client: Client, r: redis.Redis
) -> None:
    key = client.keys.schedules
    r.hset(key, "nightly", json.dumps({"cron": "0 3 * * *", "paths": ["/in/*.mov"]}))
    r.hset(key, "odd", "not json")
    schedules = web.get("/api/overview").get_json()["schedules"]
    assert schedules == [
        {"name": "nightly", "spec": {"cron": "0 3 * * *", "paths": ["/in/*.mov"]}},
        {"name": "odd", "spec": "not json"},
    ]


def test_foreign_host_headers_are_refused_on_loopback(web: FlaskClient) -> None:
    # A DNS-rebinding page reaches 127.0.0.1 with its own name in the Host header.
    assert web.get("/api/overview", headers={"Host": "evil.example:8080"}).status_code == 400
    assert web.get("/api/overview", headers={"Host": "127.0.0.1:8080"}).status_code == 200
    assert web.get("/api/overview", headers={"Host": "[::1]:8080"}).status_code == 200
    assert web.get("/api/overview", headers={"Host": "[::1:8080"}).status_code == 400


def test_reads_need_the_token_when_not_bound_to_loopback(client: Client) -> None:
    web = create_app(client, token=TOKEN, host="0.0.0.0").test_client()
    assert web.get("/api/overview").status_code == 401
    resp = web.get("/api/overview", headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["reads_need_token"] is True
    assert web.get("/").status_code == 200  # the page itself holds no data


def test_the_page_is_served_with_a_strict_policy(web: FlaskClient) -> None:
    page = web.get("/")
    assert page.status_code == 200
    assert b"dashboard.js" in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    js = web.get("/static/dashboard.js")
    assert js.status_code == 200
    # Server data reaches the DOM as text only.
    assert b"innerHTML" not in js.data and b"insertAdjacentHTML" not in js.data
    js.close()


def test_an_empty_token_is_refused(client: Client) -> None:
    with pytest.raises(ValueError):
        create_app(client, token="")


def test_retry_all_brings_every_dead_job_back(
    web: FlaskClient, client: Client, broker: Broker, stages: Registry
) -> None:
    first, second = _dead_dag(client, broker), _dead_dag(client, broker)
    resp = web.post("/api/dlq/retry-all", headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["result"] == 2
    assert client.dead() == []
    assert {client.dag_state(first.id), client.dag_state(second.id)} == {"running"}
