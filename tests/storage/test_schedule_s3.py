"""Schedules watching an S3 prefix, against moto's server behind the counting proxy: each
new object submitted once as an ``s3://`` input, identified by its content as the store
gives it, listed page by page; a store that fails is counted and listed again on the next
tick, with nothing lost and nothing submitted twice."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import stages  # noqa: F401  (registers the media stages the DAGs name)
import tests.workers.sample_stages  # noqa: F401
from mediajobs import s3_watch
from mediajobs.schedule_firing import Firing, Scheduler
from pipeline.client import Client
from pipeline.errors import SubmissionError
from pipeline.registry import REGISTRY
from pipeline.schedules import Schedules
from tests.cli.conftest import FIXTURES, Cli
from tests.storage.conftest import S3
from tests.workers.conftest import wait_for


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def s3_client(
    s3: S3, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Client]:
    """A client in a process whose environment points at the store (through the proxy)."""
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MEDIAPIPE_BREAKER_FAILURES", "2")
    monkeypatch.setenv("MEDIAPIPE_BREAKER_COOLDOWN", "1")
    conn = redis.Redis.from_url(redis_url)
    yield Client(conn, namespace=namespace, registry=REGISTRY)
    conn.close()


def _put(s3: S3, key: str, body: bytes, **extra: Any) -> None:
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=body, **extra)


def _names(fired: list[Firing]) -> list[str]:
    assert all(f.error is None for f in fired), [f.error for f in fired]
    return sorted(sub.path.rsplit("/", 1)[1] for f in fired for sub in f.submitted)


def _lists(s3: S3, since: int) -> int:
    return sum(1 for m, p in s3.proxy.lines[since:] if m == "GET" and "list-type=2" in p)


def _events(client: Client, ev: str) -> list[dict[str, str]]:
    entries: Any = client.redis.xrange(client.keys.events)
    out = []
    for _, raw in entries:
        f = {k.decode(): v.decode() for k, v in raw.items()}
        if f["ev"] == ev:
            out.append(f)
    return out


def test_a_watched_prefix_submits_each_new_content_once_across_ticks_and_outages(
    s3_client: Client, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_client
    jpg, png = (FIXTURES / "large.jpg").read_bytes(), (FIXTURES / "alpha.png").read_bytes()
    clock = Clock(1_900_000_000)
    schedules = Schedules(client, clock=clock)
    prefix = f"s3://{s3.bucket}/in/"
    spec = schedules.add("drop", prefix, every=60, out=f"s3://{s3.bucket}/renders")
    assert spec.watch and spec.path == prefix
    sched = Scheduler(client, clock=clock)

    def tick() -> list[Firing]:
        clock.t += 60
        return sched.tick()

    assert _names(tick()) == []  # an empty prefix
    monkeypatch.setattr(s3_watch, "PAGE_SIZE", 2)
    _put(s3, "in/a.jpg", jpg)
    _put(s3, "in/b.png", png)
    _put(s3, "in/c.jpg", jpg + b"\0")  # another content
    _put(s3, "in/same-as-a.jpg", jpg)  # a's content under another key: once
    _put(s3, "in/.uploading.jpg", jpg)  # dot-names are skipped
    _put(s3, "in/sub/", b"")  # a folder marker, and what is under it: not direct entries
    _put(s3, "in/sub/deep.jpg", png + b"\0")
    _put(s3, "elsewhere.jpg", png + b"\0\0")
    mark = len(s3.proxy.lines)
    first = tick()
    assert _names(first) == ["a.jpg", "b.png", "c.jpg"]
    assert _lists(s3, mark) >= 3  # five keys and a common prefix, two per page
    subs = {sub.path.rsplit("/", 1)[1]: sub for f in first for sub in f.submitted}
    for name, sub in subs.items():
        assert sub.created
        dag = client.dag(sub.dag_id)
        assert dag is not None and dag["meta"]["input"] == f"{prefix}{name}"
        jobs = client.jobs(sub.dag_id)
        assert set(jobs) == {"locate", "plan"}  # probed and planned on a worker
    etag = hashlib.md5(jpg).hexdigest()  # a single-part upload's ETag: the bytes' MD5
    assert subs["a.jpg"].sha256 == f"etag:{etag}:{len(jpg)}"

    assert _names(tick()) == []  # nothing new
    _put(s3, "in/a.jpg", jpg)  # re-uploaded, identical: not again
    _put(s3, "in/renamed.jpg", png)  # b's content under a new name: not again
    assert _names(tick()) == []
    _put(s3, "in/a.jpg", jpg + b"changed")  # changed: submitted again
    changed = tick()
    assert _names(changed) == ["a.jpg"]
    assert changed[0].submitted[0].dag_id != subs["a.jpg"].dag_id

    # A SHA-256 checksum, where the store keeps one, names the content itself.
    body = png + b"sha"
    _put(s3, "in/summed.png", body, ChecksumAlgorithm="SHA256")
    summed = tick()
    assert _names(summed) == ["summed.png"]
    assert summed[0].submitted[0].sha256 == hashlib.sha256(body).hexdigest()
    # Known by its listing from now on: no HEAD on later ticks.
    _put(s3, "in/summed-copy.png", body, ChecksumAlgorithm="SHA256")
    assert _names(tick()) == []
    mark = len(s3.proxy.lines)
    assert _names(tick()) == []
    assert not [p for m, p in s3.proxy.lines[mark:] if m == "HEAD"]

    # The store goes down: each failing listing is counted (events, the store's breaker),
    # nothing is lost; an open breaker skips the listing; once the store is back the
    # objects that arrived meanwhile are submitted, once.
    s3.proxy.down()
    _put(s3, "in/while-down.jpg", jpg + b"down")  # straight to moto, not through the proxy
    failed = [tick(), tick()]
    assert all(f[0].error and "unreachable" in f[0].error for f in failed), failed
    breaker = client.redis.hgetall(client.keys.breaker(f"s3:{s3.proxy.url}/{s3.bucket}"))
    assert breaker[b"state"] == b"open" and int(breaker[b"failures"]) == 2
    refused = s3.proxy.refused
    skipped = tick()
    assert skipped[0].error and "breaker is open" in skipped[0].error
    assert s3.proxy.refused == refused  # not even tried
    assert len(_events(client, "schedule_store_error")) == 3
    s3.proxy.up()
    time.sleep(1.2)  # the breaker's cool-down
    assert _names(tick()) == ["while-down.jpg"]
    assert _names(tick()) == []
    state = client.redis.hget(client.keys.breaker(f"s3:{s3.proxy.url}/{s3.bucket}"), "state")
    assert state == b"closed"

    # Every DAG submitted is one submission: a, b, c, a changed, summed, while-down.
    assert len(_events(client, "schedule_submitted")) == 6
    assert schedules.seen_count("drop") >= 6


def test_a_firing_that_died_before_marking_seen_gets_the_same_dag_back(
    s3_client: Client, s3: S3
) -> None:
    clock = Clock(1_900_000_000)
    schedules = Schedules(s3_client, clock=clock)
    schedules.add("drop", f"s3://{s3.bucket}/in/", every=60, out=f"s3://{s3.bucket}/r")
    _put(s3, "in/a.jpg", (FIXTURES / "cmyk.jpg").read_bytes())
    sched = Scheduler(s3_client, clock=clock)
    clock.t += 60
    (first,) = sched.tick()[0].submitted
    s3_client.redis.delete(schedules.seen_key("drop"))  # as if the node died before SADD
    clock.t += 60
    (again,) = sched.tick()[0].submitted
    assert again.dag_id == first.dag_id and first.created and not again.created


def test_s3_schedule_paths(s3_client: Client, s3: S3) -> None:
    clock = Clock(1_900_000_000)
    s = Schedules(s3_client, clock=clock)
    assert s.add("one", f"s3://{s3.bucket}/in/talk.mp4", every=60).watch is False
    sched = Scheduler(s3_client, clock=clock)
    dags = []
    for _ in range(2):  # a single object runs again on every tick
        clock.t += 60
        dags += [sub.dag_id for f in sched.tick() for sub in f.submitted]
    assert len(set(dags)) == 2
    assert s3_client.jobs(dags[0])["locate"]["params"]["input"] == f"s3://{s3.bucket}/in/talk.mp4"
    assert s.add("bucket", f"s3://{s3.bucket}", every=60).watch is True
    for bad in ("s3:///in/", f"s3://{s3.bucket}/in/*.jpg"):
        with pytest.raises(SubmissionError, match="s3://bucket/prefix/"):
            s.add("bad", bad, every=60)


def test_a_worker_fires_an_s3_schedule_and_renders_what_arrives(
    storage_cli: Cli, s3: S3, namespace: str, stage_client: Client, tmp_path: Path
) -> None:
    """The whole way with real processes: `schedule add` from the command line, a
    `mediapipe worker` that fires it, probes the new object and renders it to the bucket."""
    prefix = f"s3://{s3.bucket}/drop/"
    added = storage_cli.run(
        "--namespace", namespace, "schedule", "add", "drop", "--every", "1s", "--preset",
        "image", "--out", f"s3://{s3.bucket}/renders", prefix,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert f"watching {prefix}" in added.stdout
    storage_cli.worker(namespace, "--concurrency", "2", "--no-adaptive")
    _put(s3, "drop/photo.jpg", (FIXTURES / "large.jpg").read_bytes())

    def done() -> list[str]:
        return [
            e["dag"]
            for e in _events(stage_client, "schedule_submitted")
            if stage_client.dag_state(e["dag"]) == "completed"
        ]

    (dag_id,) = wait_for(done, 240, "the scheduled DAG to complete")
    time.sleep(3)  # more ticks: nothing submitted again
    assert [e["dag"] for e in _events(stage_client, "schedule_submitted")] == [dag_id]
    keys = [
        o["Key"]
        for o in s3.client()
        .list_objects_v2(Bucket=s3.bucket, Prefix="renders/")
        .get("Contents", [])
    ]
    assert "renders/photo/manifest.json" in keys, keys
    manifest = json.loads(
        s3.client().get_object(Bucket=s3.bucket, Key="renders/photo/manifest.json")["Body"].read()
    )
    assert (
        manifest["input"]["sha256"]
        == hashlib.sha256((FIXTURES / "large.jpg").read_bytes()).hexdigest()
    )
    listed = json.loads(
        storage_cli.run("--namespace", namespace, "schedule", "list", "--json").stdout
    )
    assert listed[0]["seen"] == 1 and listed[0]["path"] == prefix
