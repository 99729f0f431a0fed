"""A running worker applies retention on its own: after a burst of DAGs finishes and the
retention age passes, the namespace's keys return to what they were before the burst."""

from __future__ import annotations

import pytest
import redis

from pipeline.client import TERMINAL_DAG_STATES, Client
from pipeline.keys import Keys
from pipeline.model import Dag
from tests.workers.conftest import Workers, wait_for


def _keys(r: redis.Redis, namespace: str) -> set[str]:
    return {k.decode() for k in r.scan_iter(match=Keys(namespace).pattern(), count=1000)}


def _small_dag(i: int) -> Dag:
    dag = Dag(idempotency_key=f"file-{i}")
    dag.add("probe", "t.echo", {"i": i})
    dag.add("render", "t.echo", after=["probe"])
    dag.add("manifest", "t.echo", after=["probe", "render"])
    return dag


def test_a_worker_prunes_finished_dags_until_the_keys_are_back_to_the_baseline(
    workers: Workers,
    stage_client: Client,
    r: redis.Redis,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = Keys(namespace)
    monkeypatch.setenv("MEDIAPIPE_RETENTION_COMPLETED_AGE", "1")
    monkeypatch.setenv("MEDIAPIPE_RETENTION_FAILED_AGE", "1h")
    monkeypatch.setenv("MEDIAPIPE_RETENTION_DEAD_COUNT", "2")
    monkeypatch.setenv("MEDIAPIPE_RETENTION_IDEMPOTENCY_AGE", "1")
    monkeypatch.setenv("MEDIAPIPE_RETENTION_INTERVAL", "0.3")
    workers.spawn("--concurrency", "2")

    def finished(ids: list[str]) -> bool:
        return all(stage_client.dag_state(i) in TERMINAL_DAG_STATES for i in ids)

    # One DAG through the fleet first, so the namespace-wide keys (sequence, fleet
    # events, queue meta) exist in the baseline; it is pruned like any other.
    warm = _small_dag(-1)
    stage_client.submit(warm)
    wait_for(lambda: stage_client.dag(warm.id) is None, 15, "the warm-up DAG to be pruned")
    baseline = _keys(r, namespace)

    ok = [_small_dag(i) for i in range(30)]
    bad = []
    for i in range(4):
        d = Dag(idempotency_key=f"bad-{i}")
        d.add("probe", "t.bad_input", {"path": f"/in/{i}.txt"})
        bad.append(d)
    stage_client.submit_many(ok + bad)
    wait_for(lambda: finished([d.id for d in ok + bad]), 30, "the DAGs to finish")
    peak = len(_keys(r, namespace))
    assert peak > len(baseline) + 30 * 9  # each DAG left 13 keys in schema 1, 10 in schema 2

    def failed_dag_keys() -> set[str]:
        return {k for k in _keys(r, namespace) if any(d.id in k for d in bad)}

    # Completed DAGs go after 1 s; failed ones are kept for an hour, so what stays
    # beyond the baseline is exactly their keys and the two sets that index them.
    expected = baseline | {keys.dead, keys.dags_failed}
    wait_for(
        lambda: _keys(r, namespace) - failed_dag_keys() == expected,
        15,
        "the keys to return to the baseline",
    )
    assert all(stage_client.dag_state(d.id) == "failed" for d in bad)
    assert r.zcard(keys.dead) == 2  # the dead-letter queue keeps its newest 2
    assert not [k for k in _keys(r, namespace) if ":idem:" in k]  # expired, or pruned
