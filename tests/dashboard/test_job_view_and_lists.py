"""The dashboard's job view, paged lists, worker controls, charts and event stream, through
Flask's test client (and one real HTTP stream) against the suite's real Redis."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from mediajobs.dashboard.app import create_app
from mediajobs.dashboard.listings import JobRates
from pipeline.breaker import BreakerPolicy, ServiceBreakers
from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import PermanentError
from pipeline.model import Backoff, Dag
from pipeline.registry import Registry, stage
from pipeline.worker_control import asked
from tests.dashboard.conftest import TOKEN, Served
from tests.helpers import run_dag

AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUICK = Backoff(base=0.05, jitter=0)


@pytest.fixture
def stages(registry: Registry, tmp_path: Path) -> Registry:
    @stage("ok", registry=registry)
    def ok(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
        return "done"

    @stage("flaky_render", registry=registry, attempts=3)
    def flaky_render(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        """Fails its first attempt, then writes a poster inside the DAG's out_dir and names
        a file outside it."""
        if ctx.attempt == 1:
            raise OSError("disk hiccup while writing the poster")
        ctx.progress(50.0, "encoding", fps="48.5", speed="1.62", eta="3")
        out = Path(params["out_dir"]) / "poster.png"
        out.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
        return {
            "renditions": [
                {"path": str(out), "bytes": out.stat().st_size, "width": 320, "height": 180},
                {"path": params["elsewhere"], "bytes": 5},
            ]
        }

    @stage("broken", registry=registry)
    def broken(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
        raise PermanentError(f"{params['path']}: not a media file")

    return registry


@pytest.fixture
def web(client: Client) -> FlaskClient:
    return create_app(client, token=TOKEN).test_client()


def test_the_job_view_of_a_quiet_one_job_dag_still_has_its_attempt(
    web: FlaskClient, r: redis.Redis, client: Client, broker: Broker, stages: Registry
) -> None:
    """A one-job DAG run plainly writes no event stream (docs/redis-layout.md): the view
    reads its attempt from the hashes instead."""
    dag = Dag()
    dag.add("only", "ok")
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "completed"
    assert r.exists(client.keys.dag_events(dag.id)) == 0
    j = web.get(f"/api/jobs/{dag.job_id('only')}").get_json()
    (attempt,) = j["attempt_log"]
    assert (attempt["attempt"], attempt["outcome"], attempt["worker"]) == (
        1,
        "completed",
        broker.worker_id,
    )
    assert j["started"] <= attempt["ended"] and attempt["started"] == j["started"]


def test_the_job_view_has_attempts_with_errors_timings_worker_progress_and_output_links(
    web: FlaskClient, client: Client, broker: Broker, stages: Registry, tmp_path: Path
) -> None:
    out_dir, secret = tmp_path / "out", tmp_path / "secret.txt"
    out_dir.mkdir()
    secret.write_text("not an output of this DAG's folder")
    dag = Dag(meta={"input": "/srv/in/talk.mov", "out_dir": str(out_dir)})
    dag.add(
        "poster",
        "flaky_render",
        {"out_dir": str(out_dir), "elsewhere": str(secret)},
        backoff=QUICK,
    )
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "completed"

    j = web.get(f"/api/jobs/{dag.job_id('poster')}").get_json()
    assert (j["state"], j["stage"], j["dag"], j["input"]) == (
        "completed",
        "flaky_render",
        dag.id,
        "/srv/in/talk.mov",
    )
    assert j["attempts"] == 2 and j["max_attempts"] == 3
    assert j["worker"] == broker.worker_id
    assert j["params"]["out_dir"] == str(out_dir)
    assert 0 < j["created"] <= j["started"] <= j["finished"]
    assert j["duration_ms"] == j["finished"] - j["started"]
    first, note, second = j["attempt_log"]
    assert (first["attempt"], first["outcome"], first["worker"]) == (1, "failed", broker.worker_id)
    assert first["error"]["type"] == "OSError"
    assert first["error"]["message"] == "disk hiccup while writing the poster"
    assert "flaky_render" in first["error"]["traceback"]  # the stage's frame
    assert note["outcome"] == "retry in 0.05s"
    assert (second["attempt"], second["outcome"]) == (2, "completed")
    assert second["started"] >= first["ended"] and second["ended"] >= second["started"]
    assert [p["percent"] for p in j["progress_history"]] == [50.0]
    assert j["progress_history"][0]["fps"] == 48.5

    inside, outside = j["outputs"]
    assert inside["kind"] == "image" and (inside["width"], inside["height"]) == (320, 180)
    assert inside["url"] == f"/files/{dag.job_id('poster')}/0"
    assert outside["url"] is None  # not under the DAG's out_dir: shown, never served
    resp = web.get(inside["url"])
    assert resp.status_code == 200 and resp.data.startswith(b"\x89PNG")
    assert resp.mimetype == "image/png"
    resp.close()
    assert web.get(f"/files/{dag.job_id('poster')}/1").status_code == 404
    exposed = create_app(client, token=TOKEN, host="0.0.0.0").test_client()
    assert exposed.get(inside["url"]).status_code == 401  # off loopback, files need it too
    allowed = exposed.get(inside["url"], headers=AUTH)
    assert allowed.status_code == 200
    allowed.close()
    assert web.get(f"/files/{dag.job_id('poster')}/7").status_code == 404
    assert web.get(f"/api/jobs/{dag.id}/nope").status_code == 404


def test_the_job_view_of_a_dead_job_keeps_each_error(
    web: FlaskClient, client: Client, broker: Broker, stages: Registry
) -> None:
    dag = Dag(meta={"input": "notes.txt"})
    dag.add("probe", "broken", {"path": "notes.txt"})
    client.submit(dag)
    assert run_dag(client, broker, dag.id) == "failed"
    j = web.get(f"/api/jobs/{dag.job_id('probe')}").get_json()
    assert j["state"] == "dead" and j["error"]["type"] == "PermanentError"
    [attempt] = [a for a in j["attempt_log"] if a["kind"] == "attempt"]
    assert attempt["outcome"] == "dead"
    assert attempt["error"]["message"] == "notes.txt: not a media file"


def _one_job_dags(n: int, stage_name: str = "ok", **meta: str) -> list[Dag]:
    dags = []
    for i in range(n):
        d = Dag(meta={"input": f"/srv/in/clip-{i:03d}.mov", **meta})
        d.add("only", stage_name)
        dags.append(d)
    return dags


def test_the_dag_list_filters_by_state_searches_and_pages_newest_first(
    web: FlaskClient, client: Client, broker: Broker, stages: Registry
) -> None:
    done = _one_job_dags(2)
    for d in done:
        client.submit(d)
        assert run_dag(client, broker, d.id) == "completed"
    bad = Dag(meta={"input": "/srv/in/broken.mov"})
    bad.add("probe", "broken", {"path": "broken.mov"})
    client.submit(bad)
    assert run_dag(client, broker, bad.id) == "failed"
    waiting = _one_job_dags(60)
    client.submit_many(waiting)  # no worker: they stay running
    newest_first = [d.id for d in reversed(waiting)]

    pages = [web.get(f"/api/dags?page={n}&per_page=25").get_json() for n in (1, 2, 3)]
    ids = [d["id"] for p in pages for d in p["dags"]]
    assert ids[:60] == newest_first and len(ids) == 63 == len(set(ids))
    assert [p["has_next"] for p in pages] == [True, True, False]
    assert pages[0]["finished_counts"] == {"completed": 2, "failed_or_cancelled": 1}

    completed = web.get("/api/dags?state=completed").get_json()["dags"]
    assert sorted(d["id"] for d in completed) == sorted(d.id for d in done)
    assert all(d["finished"] >= d["created"] > 0 for d in completed)
    assert all(d["duration_ms"] == d["finished"] - d["created"] for d in completed)
    [failed] = web.get("/api/dags?state=failed").get_json()["dags"]
    assert failed["id"] == bad.id and failed["dead"] == 1
    running = web.get("/api/dags?state=running&per_page=100").get_json()
    assert [d["id"] for d in running["dags"]] == newest_first
    assert all(d["finished"] == 0 and d["duration_ms"] >= 0 for d in running["dags"])

    found = web.get("/api/dags?q=CLIP-017").get_json()
    assert [d["id"] for d in found["dags"]] == [waiting[17].id] and found["matches"] == 1
    assert web.get(f"/api/dags?q={bad.id}").get_json()["dags"][0]["id"] == bad.id
    assert web.get("/api/dags?state=paused").status_code == 400


def test_the_job_list_pages_each_state_and_queue(
    web: FlaskClient, client: Client, broker: Broker, stages: Registry
) -> None:
    a = Dag()
    for i in range(30):
        a.add(f"a{i:02d}", "ok")
    b = Dag()
    for i in range(5):
        b.add(f"b{i}", "ok", queue="video")
    client.submit(a)
    client.submit(b)

    first = web.get("/api/jobs?state=waiting&queue=default&per_page=20").get_json()
    second = web.get("/api/jobs?state=waiting&queue=default&per_page=20&page=2").get_json()
    assert first["total"] == 30 and first["has_next"] and not second["has_next"]
    names = [j["name"] for j in first["jobs"] + second["jobs"]]
    assert sorted(names) == [f"a{i:02d}" for i in range(30)] and len(set(names)) == 30
    both = web.get("/api/jobs?state=waiting&per_page=100").get_json()
    assert both["total"] == 35 and len(both["jobs"]) == 35
    assert sorted(both["queues"]) == ["default", "video"]
    video = web.get("/api/jobs?state=waiting&queue=video").get_json()
    assert {j["queue"] for j in video["jobs"]} == {"video"} and video["total"] == 5

    dead = Dag()
    dead.add("probe", "broken", {"path": "x.mov"})
    client.submit(dead)
    run_dag(client, broker, dead.id)
    rows = web.get("/api/jobs?state=dead").get_json()["jobs"]
    assert [j["id"] for j in rows] == [dead.job_id("probe")]
    assert rows[0]["error"] == "PermanentError: x.mov: not a media file"
    assert web.get("/api/jobs?state=dead&queue=video").get_json()["jobs"] == []
    assert web.get("/api/jobs?state=finished").status_code == 400


def test_worker_controls_need_the_token_and_a_live_worker_node(
    web: FlaskClient, client: Client, r: redis.Redis, namespace: str
) -> None:
    node = Broker(r, namespace=namespace, registry=Registry())
    node.heartbeat(30, {"host": "box1", "pid": 4242, "state": "running", "capacity": 2})
    lane = Broker(r, namespace=namespace, registry=Registry())
    lane.heartbeat(30, {"host": "box1", "pid": 4243, "lane": "batch:image_renditions"})
    body = {"worker": node.worker_id}

    assert web.post("/api/workers/drain", json=body).status_code == 401
    wrong = {"Authorization": "Bearer no"}
    assert web.post("/api/workers/stop", json=body, headers=wrong).status_code == 403
    assert asked(r, client.keys, node.worker_id) is None
    missing = web.post("/api/workers/drain", json={"worker": "box9:1:abcdef"}, headers=AUTH)
    assert missing.status_code == 404
    to_lane = web.post("/api/workers/drain", json={"worker": lane.worker_id}, headers=AUTH)
    assert to_lane.status_code == 409

    resp = web.post("/api/workers/drain", json=body, headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["result"]["host"] == "box1"
    assert asked(r, client.keys, node.worker_id) == "drain"
    workers = web.get("/api/overview").get_json()["workers"]
    [shown] = [w for w in workers if w["id"] == node.worker_id]
    assert shown["asked"] == "drain"
    assert web.post("/api/workers/stop", json=body, headers=AUTH).status_code == 200
    assert asked(r, client.keys, node.worker_id) == "stop"


def test_charts_count_finished_dags_and_dead_jobs_per_minute(
    web: FlaskClient, client: Client, broker: Broker, stages: Registry
) -> None:
    for d in _one_job_dags(3):
        client.submit(d)
        run_dag(client, broker, d.id)
    bad = Dag()
    bad.add("probe", "broken", {"path": "x"})
    client.submit(bad)
    run_dag(client, broker, bad.id)
    c = web.get("/api/charts").get_json()
    assert len(c["minute_starts"]) == len(c["dags_completed"]) == 60
    assert sum(c["dags_completed"]) == 3 and sum(c["dags_failed"]) == 1
    assert sum(c["jobs_dead"]) == 1
    assert c["minute_starts"][-1] <= c["now_ms"] < c["minute_starts"][-1] + 60_000
    assert len(c["jobs_done"]) == len(c["jobs_failed"]) == 60


def test_job_rates_count_what_the_heartbeats_grew_by_per_minute() -> None:
    rates = JobRates()
    t = 1_800_000_000_000 - 1_800_000_000_000 % 60_000  # a minute's start

    def beat(at: int, **totals: tuple[int, int]) -> None:
        workers = [{"id": w, "jobs_done": d, "jobs_failed": f} for w, (d, f) in totals.items()]
        rates.observe(at, workers)

    beat(t, a=(100, 5))  # first sight: what it did before is not counted
    beat(t + 10_000, a=(104, 6), b=(7, 0))
    beat(t + 70_000, a=(110, 6), b=(9, 1))
    beat(t + 80_000, a=(2, 0), b=(9, 1))  # a restarted: not negative
    done, failed = rates.per_minute([t, t + 60_000, t + 120_000])
    assert (done, failed) == ([4, 8, 0], [1, 1, 0])
    assert rates.since_ms == t
    beat(t + 61 * 60_000, a=(3, 0))
    assert rates.per_minute([t, t + 60_000])[0] == [0, 0]  # older than an hour: dropped


def test_request_paths_never_scan_the_keyspace(
    web: FlaskClient, client: Client, r: redis.Redis, namespace: str, stages: Registry
) -> None:
    client.submit_many(_one_job_dags(30))
    breakers = ServiceBreakers(r, namespace=namespace, policy=BreakerPolicy(failures=2))
    for _ in range(2):
        breakers.outcome("s3:minio/media", False)  # opens it: a breaker_opened event
    before = r.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)
    for path in (
        "/api/overview",
        "/api/dags?page=2&per_page=10",
        "/api/dags?q=clip",
        "/api/jobs?state=waiting",
        "/api/jobs?state=dead&queue=default",
        "/api/charts",
    ):
        assert web.get(path).status_code == 200, path
    assert r.info("commandstats").get("cmdstat_scan", {}).get("calls", 0) == before
    # Breakers are found through their events instead.
    assert web.get("/api/overview").get_json()["breakers"]["s3:minio/media"]["state"] == "open"


@pytest.mark.serial  # alone under xdist: the event must arrive < 2 s after the submit
def test_the_live_stream_says_at_once_when_a_dag_is_submitted(
    serve: Callable[[Client], Served], client: Client, stages: Registry
) -> None:
    served = serve(client)
    with urllib.request.urlopen(f"{served.url}/api/live", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.readline() == b"event: hello\n"
        dag = Dag()
        dag.add("only", "ok")
        t0 = time.monotonic()
        client.submit(dag)
        lines: list[bytes] = []
        while not any(line.startswith(b"event: change") for line in lines):
            lines.append(resp.readline())
        assert time.monotonic() - t0 < 2.0
        data = resp.readline()
        assert data.startswith(b"data: ") and b'"submitted"' in data
