"""`recent_dags`: the newest DAGs from the fleet stream and the finished sets, no SCAN."""

from __future__ import annotations

import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.model import Dag
from pipeline.recent_dags import recent_dags
from pipeline.registry import REGISTRY
from tests.helpers import run_dag


def _dag(client: Client, stage: str = "t.echo", name: str = "x") -> str:
    dag = Dag(meta={"input": f"/in/{name}.jpg"})
    dag.add("a", stage, {"x": 1})
    return client.submit(dag).dag_id


def test_newest_first_with_limit_and_state_filters(r: redis.Redis, namespace: str) -> None:
    import tests.workers.sample_stages  # noqa: F401  (registers t.echo, t.poison)

    client = Client(r, namespace=namespace, registry=REGISTRY)
    broker = Broker(r, namespace=namespace, registry=REGISTRY, lease=5.0)
    done = [_dag(client, name=f"done{i}") for i in range(3)]
    for d in done:
        assert run_dag(client, broker, d) == "completed"
    bad = Dag(meta={"input": "/in/bad.jpg"})
    bad.add("a", "t.bad_input", {"path": "/in/bad.jpg"})
    failed = client.submit(bad).dag_id
    assert run_dag(client, broker, failed) == "failed"
    waiting = [_dag(client, name=f"wait{i}") for i in range(2)]
    cancelled = _dag(client, name="cancel")
    client.cancel(cancelled)

    every = recent_dags(r, client.keys, limit=20)
    assert [d.id for d in every.dags] == [cancelled, *reversed(waiting), failed, *reversed(done)]
    assert every.complete
    assert every.dags[0].meta["input"] == "/in/cancel.jpg"
    assert every.dags[-1].finished_ms is not None and every.dags[-1].completed == 1

    assert [d.id for d in recent_dags(r, client.keys, limit=2).dags] == [cancelled, waiting[1]]
    running = recent_dags(r, client.keys, states=["running"])
    assert [d.id for d in running.dags] == list(reversed(waiting))
    assert [d.id for d in recent_dags(r, client.keys, states=["failed"]).dags] == [failed]
    assert [d.id for d in recent_dags(r, client.keys, states=["cancelled"]).dags] == [cancelled]
    both = recent_dags(r, client.keys, limit=2, states=["completed"])
    assert [d.id for d in both.dags] == [done[2], done[1]] and both.complete


def test_with_the_stream_trimmed_finished_and_running_dags_are_still_found(
    r: redis.Redis, namespace: str
) -> None:
    import tests.workers.sample_stages  # noqa: F401

    client = Client(r, namespace=namespace, registry=REGISTRY)
    broker = Broker(r, namespace=namespace, registry=REGISTRY, lease=5.0)
    finished = _dag(client, name="f")
    assert run_dag(client, broker, finished) == "completed"
    running = _dag(client, name="r")
    claimed, _ = broker.claim(["default"])
    assert [j.id for j in claimed] == [f"{running}/a"]
    backlog = _dag(client, name="b")  # waiting, nothing of it running
    r.xtrim(client.keys.events, maxlen=0)  # its window gone, as after 100,000 events

    listing = recent_dags(r, client.keys, limit=20)
    assert [d.id for d in listing.dags] == [running, finished]
    assert backlog not in [d.id for d in listing.dags]
    assert not listing.complete  # and says it may have missed one
    only_done = recent_dags(r, client.keys, states=["completed"])
    assert [d.id for d in only_done.dags] == [finished] and only_done.complete
