"""A fleet on a Sentinel-managed master (``redis+sentinel://``): a master, two replicas and
three sentinels, real valkey-server processes; two `mediapipe worker` processes and a
client run 30 DAGs; the master is SIGKILLed mid-run. Every DAG completes on the promoted
replica, each job's result is recorded once, and the workers find the new master by
themselves. Without a durability option (``WAIT``, not built yet) a completion the old
master took but had not replicated yet may be run once more on the new one: the test
counts those and allows them, as the guarantee does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.client import Client
from pipeline.connection import client_from_url
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from pipeline.scripts import NotReplicated
from tests.cli.conftest import FIXTURES, ROOT
from tests.sentinel_cell import Cell
from tests.workers.conftest import Workers, wait_for


@pytest.fixture
def cell(tmp_path: Path) -> Iterator[Cell]:
    c = Cell(tmp_path)
    try:
        wait_for(c.ready, 30, "replicas and sentinels to see each other")
        yield c
    finally:
        c.stop()


def test_a_master_killed_mid_run_fails_over_and_every_dag_completes(
    cell: Cell, tmp_path: Path
) -> None:
    r = client_from_url(cell.url, socket_timeout=2)
    namespace = "sent"
    client = Client(r, namespace=namespace, registry=REGISTRY)
    workers = Workers(cell.url, namespace, client, tmp_path)
    try:
        for _ in range(2):
            workers.spawn("--concurrency", "2", "--lease", "3", url=cell.url, ready=False)
        wait_for(lambda: len(client.workers()) == 2, 30, "two workers to register")
        dags = []
        for i in range(30):
            dag = Dag()
            dag.add("s", "t.sleep", {"seconds": 0.2, "i": i})
            client.submit(dag)
            dags.append(dag)
        # ... and a user's `submit --wait` of three photos, waiting across the failover
        out = tmp_path / "out"
        photos = [str(FIXTURES / n) for n in ("cmyk.jpg", "icc_profile.jpg", "alpha.png")]
        waiting = subprocess.Popen(
            [sys.executable, "-m", "mediajobs", "--redis", cell.url, "--namespace", namespace,
             "submit", *photos, "--out", str(out), "--wait", "--json"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

        def done() -> int:
            try:
                return sum(client.dag_state(d.id) == "completed" for d in dags)
            except redis.RedisError:
                return 0

        wait_for(lambda: done() >= 6, 60, "a few DAGs to complete")
        cell.procs[0].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        first_after = None
        before = done()
        deadline = killed + 90
        while time.monotonic() < deadline:
            n = done()
            if first_after is None and n > before:
                first_after = time.monotonic() - killed
            if n == len(dags):
                break
            time.sleep(0.1)
        assert done() == len(dags), [client.dag_state(d.id) for d in dags]
        stdout, stderr = waiting.communicate(timeout=90)
        assert waiting.returncode == 0, stderr
        assert "Traceback" not in stderr
        said = [line for line in stderr.splitlines() if "submitted" not in line]
        assert len(said) == 2 and "unreachable" in said[0] and "is back" in said[1], stderr
        docs = json.loads(stdout)
        assert [d["status"] for d in docs] == ["completed"] * 3
        assert all(Path(d["manifest"]).is_file() for d in docs)
        new_master = r.connection_pool.get_master_address()  # type: ignore[attr-defined]
        assert new_master[1] in cell.ports[1:]
        runs = 0
        for d in dags:
            job = client.job(d.job_id("s"))
            assert job is not None and job["state"] == "completed"
            assert isinstance(job["result"], dict) and "pid" in job["result"]
            runs += int(job["attempts"])
        # each at most once more than once: a completion the old master had not replicated
        assert runs <= 2 * len(dags)
        assert all(p.poll() is None for p in workers.procs), "the workers carried on"
        print(
            f"failover: first DAG completed {first_after:.1f} s after the kill; "
            f"{runs - len(dags)} job runs repeated"
        )
        logs = "".join((tmp_path / f"worker{i}.log").read_text(errors="replace") for i in range(2))
        assert "Traceback" not in logs
    finally:
        workers.kill_all()


def test_durable_calls_wait_for_a_replica(
    cell: Cell, r: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With MEDIAPIPE_DURABLE=1 a submit returns once a replica holds it; against a
    server with no replica it is never acknowledged (resent, then an error)."""
    monkeypatch.setenv("MEDIAPIPE_DURABLE", "1")
    replicated = Client(client_from_url(cell.url, socket_timeout=3), registry=REGISTRY)
    dag = Dag()
    dag.add("a", "t.echo")
    assert replicated.submit(dag).created
    holders = [
        port
        for port in cell.ports
        if redis.Redis(port=port).info("replication")["role"] == "slave"
        and redis.Redis(port=port).exists(replicated.keys.dag(dag.id))
    ]
    assert holders, "no replica held the DAG when the submit returned"

    alone = Client(r, namespace=namespace, registry=REGISTRY)
    alone.scripts.resend_for = 0.3
    lonely = Dag()
    lonely.add("a", "t.echo")
    with pytest.raises(NotReplicated, match="0 of the 1 replicas MEDIAPIPE_DURABLE asks for"):
        alone.submit(lonely)


@pytest.mark.parametrize("how", ["submit", "submit_many"])  # one call; a pipelined stream
def test_a_durable_resend_waits_for_the_first_send_to_be_replicated(
    cell: Cell, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The first send's WAIT times out (both replicas stopped), so the call is resent on a
    new connection and answered from what the first send wrote. That resend writes
    nothing else, and WAIT on a connection that wrote nothing is answered at once: the
    submit must still not be acknowledged while no replica holds the DAG."""
    monkeypatch.setenv("MEDIAPIPE_DURABLE", "1")
    client = Client(client_from_url(cell.url, socket_timeout=3), registry=REGISTRY)
    warm = Dag()
    warm.add("a", "t.echo")
    client.submit(warm)  # the library loaded and replicated before the replicas stop
    replicas = cell.procs[1:3]
    for p in replicas:
        p.send_signal(signal.SIGSTOP)
    try:
        client.scripts.resend_for = 1.2
        dag = Dag()
        dag.add("a", "t.echo")
        with pytest.raises(NotReplicated):
            if how == "submit":
                client.submit(dag)
            else:
                client.submit_many([dag])
    finally:
        for p in replicas:
            p.send_signal(signal.SIGCONT)
    # written on the master all along; the replicas get it once they run again
    master = redis.Redis(port=cell.master())
    assert master.exists(client.keys.dag(dag.id))
