"""One log line per job start and end (done, retry, dead...) with the DAG, job, stage,
attempt, duration and worker: from `mediapipe worker` (as JSON with --log-format json),
from the inline runner, and none at all, with no string built, when INFO is off."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import Registry, stage
from tests.helpers import run_dag
from tests.workers.conftest import ROOT, Workers, wait_for
from workers import job_log

FIELDS = {"event", "dag", "job", "stage", "queue", "attempt", "max_attempts", "duration_s"}


def test_a_worker_logs_one_json_line_per_job_start_and_end(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    w = workers.spawn("--concurrency", "1", "--log-format", "json")
    wid = workers.worker_id(w)
    dag = Dag()
    dag.add("ok", "t.echo", {"x": 1})
    dag.add("bad", "t.bad_input", {"path": "/in/x.jpg"})
    dag.add("crash", "t.exit", {"flag": str(tmp_path / "exited")})
    stage_client.submit(dag)
    wait_for(
        lambda: all(
            (stage_client.job(dag.job_id(n)) or {}).get("state") in ("completed", "dead")
            for n in ("ok", "bad", "crash")
        ),
        60,
        "the jobs to end",
    )

    def lines() -> list[dict[str, Any]]:
        # Every line is one JSON object, the pool children's included.
        text = workers.log(w)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    wait_for(lambda: sum(1 for d in lines() if d.get("event") == "done") >= 2, 10, "the lines")
    jobs = [d for d in lines() if d["logger"] == "mediapipe.jobs"]
    assert all(FIELDS | {"worker", "ts", "level", "message"} <= set(d) for d in jobs), jobs
    assert all(d["worker"] == wid and d["dag"] == dag.id for d in jobs)

    def events(name: str) -> list[tuple[str, int, Any]]:
        return [
            (d["event"], d["attempt"], d["duration_s"])
            for d in jobs
            if d["job"] == dag.job_id(name)
        ]

    ok = events("ok")
    assert [e[:2] for e in ok] == [("started", 1), ("done", 1)]
    assert ok[0][2] is None and isinstance(ok[1][2], float) and ok[1][2] >= 0
    assert [e[:2] for e in events("bad")] == [("started", 1), ("dead", 1)]
    assert [e[:2] for e in events("crash")] == [
        ("started", 1),
        ("retry", 1),
        ("started", 2),
        ("done", 2),
    ]
    dead = next(d for d in jobs if d["event"] == "dead")
    assert dead["stage"] == "t.bad_input" and dead["max_attempts"] == 3
    assert dead["error"] == "PermanentError: /in/x.jpg: not a media file"
    assert "job dead" in dead["message"] and f"job={dag.job_id('bad')}" in dead["message"]


def _runner_dag(registry: Registry, client: Client) -> Dag:
    if "t.twice" not in registry:

        @stage("t.twice", registry=registry)
        def twice(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
            return int(params["x"]) * 2

    dag = Dag()
    dag.add("a", "t.twice", {"x": 2})
    client.submit(dag)
    return dag


def test_the_inline_runner_logs_start_and_end_at_info(
    client: Client, broker: Broker, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=job_log.log.name)
    dag = _runner_dag(registry, client)
    assert run_dag(client, broker, dag.id) == "completed"
    got = [r.fields for r in caplog.records if r.name == job_log.log.name]  # type: ignore[attr-defined]
    assert [(f["event"], f["job"], f["worker"]) for f in got] == [
        ("started", dag.job_id("a"), broker.worker_id),
        ("done", dag.job_id("a"), broker.worker_id),
    ]
    assert got[1]["duration_s"] is not None and got[1]["stage"] == "t.twice"


def test_with_info_off_the_inline_runner_builds_no_job_line(
    client: Client,
    broker: Broker,
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.WARNING, logger=job_log.log.name)
    built: list[Any] = []
    monkeypatch.setattr(job_log, "_line", lambda *args: built.append(args))
    dag = _runner_dag(registry, client)
    assert run_dag(client, broker, dag.id) == "completed"
    assert built == []
    # The same runner code with INFO on does build them (the test can fail).
    caplog.set_level(logging.INFO, logger=job_log.log.name)
    dag = _runner_dag(registry, client)
    assert run_dag(client, broker, dag.id) == "completed"
    assert [args[0] for args in built] == ["started", "done"]


NOISE = textwrap.dedent(
    """
    import logging, sys
    from pipeline.logsetup import configure_logging
    configure_logging(sys.argv[1], sys.argv[2], libraries=sys.argv[3] if sys.argv[3] else None)
    logging.getLogger("filelock").debug("library noise")
    logging.getLogger("urllib3.connectionpool").info("library chatter")
    logging.getLogger("mediapipe.worker").debug("our debug line")
    logging.getLogger("pyvips").warning("library warning")
    """
)


@pytest.mark.parametrize(
    ("level", "libraries", "shown", "hidden"),
    [
        ("DEBUG", "", {"our debug line", "library warning"}, {"library noise", "chatter"}),
        ("INFO", "", {"library warning"}, {"our debug line", "library noise", "chatter"}),
        ("DEBUG", "DEBUG", {"our debug line", "library noise", "library chatter"}, set()),
    ],
)
def test_library_noise_is_off_unless_asked_for(
    level: str, libraries: str, shown: set[str], hidden: set[str]
) -> None:
    res = subprocess.run(
        [sys.executable, "-c", NOISE, level, "plain", libraries],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert all(s in res.stderr for s in shown), res.stderr
    assert not any(h in res.stderr for h in hidden), res.stderr
