"""Fleet-wide rate limits, concurrency caps and a service throttling a queue."""

from __future__ import annotations

from pathlib import Path

from pipeline.client import Client
from pipeline.model import Dag
from tests.workers.conftest import Workers, wait_for


def _starts(client: Client, dag: Dag) -> list[float]:
    return sorted(e.timestamp_ms / 1000 for e in client.events(dag.id) if e.type == "active")


def test_a_rate_of_5_per_second_holds_across_two_workers(
    workers: Workers, stage_client: Client
) -> None:
    stage_client.set_rate_limit("default", 5, per_seconds=1.0)
    for _ in range(2):
        workers.spawn("--concurrency", "2")
    dag = Dag()
    n = 60  # 12 s at the limit: long enough to see the rate, not just the first windows
    for i in range(n):
        dag.add(f"e{i}", "t.echo", {"i": i})
    stage_client.submit(dag)
    wait_for(lambda: stage_client.dag_state(dag.id) == "completed", 90, "the DAG")
    starts = _starts(stage_client, dag)
    assert len(starts) == n
    rate = (n - 1) / (starts[-1] - starts[0])
    assert 5 * 0.75 <= rate <= 5 * 1.1, rate
    # Fixed windows: no 1-second span holds more than two windows' worth.
    worst = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
    assert worst <= 10, worst
    workers_used = {j["worker"] for j in stage_client.jobs(dag.id).values()}
    assert len(workers_used) == 2


def test_the_concurrency_cap_is_never_exceeded(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    stage_client.set_concurrency_limit("default", 2)
    marks = tmp_path / "marks"
    marks.mkdir()
    for _ in range(2):
        workers.spawn("--concurrency", "2")  # 4 slots in the fleet, cap 2
    dag = Dag()
    for i in range(8):
        dag.add(f"s{i}", "t.sleep", {"seconds": 0.4, "marks": str(marks)})
    stage_client.submit(dag)
    wait_for(lambda: stage_client.dag_state(dag.id) == "completed", 60, "the DAG")
    spans = [
        (float((marks / f"s{i}.start").read_text()), float((marks / f"s{i}.end").read_text()))
        for i in range(8)
    ]
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap == 2, overlap


def test_a_throttled_service_holds_the_whole_queue_back(
    workers: Workers, stage_client: Client, tmp_path: Path
) -> None:
    workers.spawn("--concurrency", "1")
    flag = tmp_path / "throttled"
    first = Dag()
    first.add("api", "t.throttled", {"flag": str(flag)})
    stage_client.submit(first)
    wait_for(flag.exists, 20, "the throttle")
    later = Dag()
    for i in range(3):
        later.add(f"e{i}", "t.echo", {"i": i})
    stage_client.submit(later)
    wait_for(lambda: stage_client.dag_state(later.id) == "completed", 30, "the other jobs")
    wait_for(lambda: stage_client.dag_state(first.id) == "completed", 30, "the throttled job")
    throttled_at = float(flag.read_text())
    assert min(_starts(stage_client, later)) >= throttled_at + 0.9
    job = stage_client.job(first.job_id("api"))
    assert job is not None and job["attempts"] == 1  # deferred, not failed
