"""`mediapipe status` tells a job whose worker vanished from one that is running."""

from __future__ import annotations

import time

import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from tests.cli.conftest import Cli


def test_a_lapsed_lease_and_no_worker_are_shown_as_such(
    fleet_cli: Cli, namespace: str, r: redis.Redis
) -> None:
    import tests.workers.sample_stages  # noqa: F401  (registers t.sleep)

    client = Client(r, namespace=namespace, registry=REGISTRY)
    dag = Dag()
    dag.add("nap", "t.sleep", {"seconds": 1})
    dag.add("after", "t.echo", {"x": 1}, after=["nap"])
    client.submit(dag)
    # A worker that claims the job and dies: no heartbeat, no renewal, no reclaim.
    gone = Broker(r, namespace=namespace, registry=REGISTRY, lease=0.2)
    jobs, _ = gone.claim(["default"])
    assert [j.id for j in jobs] == [dag.job_id("nap")]
    time.sleep(1.3)

    one = fleet_cli.run("--namespace", namespace, "status", dag.id)
    assert one.returncode == 0, one.stderr
    line = next(x for x in one.stdout.splitlines() if "nap" in x)
    assert "lease expired" in line and "waiting for a worker" in line, one.stdout
    assert "no worker is running" in one.stdout

    overview = fleet_cli.run("--namespace", namespace, "status")
    assert overview.returncode == 0, overview.stderr
    assert "no worker is running" in overview.stdout
    assert "lease expired" in overview.stdout
    assert "capability" not in overview.stdout

    as_json = fleet_cli.run("--namespace", namespace, "status", dag.id, "--json")
    doc = __import__("json").loads(as_json.stdout)
    assert doc["jobs"]["nap"]["lease_expired_ms"] >= 1000
    assert doc["workers_alive"] == 0
