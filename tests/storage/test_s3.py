"""Outputs in S3-compatible storage, and riding out a storage outage with the breaker.

The server is moto in server mode (a real HTTP S3 API in its own process). A TCP proxy in
front of it plays the outage: while "down" it accepts and drops every connection (each
one counted as a storage call), while moto keeps what was already stored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import redis

from pipeline.breaker import ServiceBreakers
from pipeline.client import Client
from pipeline.registry import REGISTRY
from tests.cli.conftest import FIXTURES, Cli
from tests.storage.conftest import S3
from tests.workers.conftest import wait_for

IMAGES = ["cmyk.jpg", "alpha.png", "palette_alpha.png", "icc_profile.jpg"]


def _client(redis_url: str, namespace: str) -> Client:
    return Client(redis.Redis.from_url(redis_url), namespace=namespace, registry=REGISTRY)


def _object_sha256(s3: S3, key: str) -> str:
    import hashlib

    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest()


def test_outputs_land_in_the_bucket_verified_and_the_manifest_lists_their_uris(
    storage_cli: Cli,
    s3: S3,
    namespace: str,
) -> None:
    storage_cli.worker(namespace, "--concurrency", "2", "--no-adaptive", "--log-level", "INFO")
    res = storage_cli.run(
        "--namespace",
        namespace,
        "submit",
        str(FIXTURES / "large.jpg"),
        str(FIXTURES / "clip.mp4"),
        "--out",
        f"s3://{s3.bucket}/renders",
        "--wait",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    image, video = json.loads(res.stdout)
    keys = {o["Key"]: o["Size"] for o in s3.client().list_objects_v2(Bucket=s3.bucket)["Contents"]}
    for doc, name in ((image, "large"), (video, "clip")):
        assert doc["status"] == "completed"
        for o in doc["outputs"]:
            assert o["path"].startswith(f"s3://{s3.bucket}/renders/{name}/")
            key = o["path"].split("/", 3)[3]
            assert keys[key] == o["bytes"]
            assert _object_sha256(s3, key) == o["sha256"]
        manifest = json.loads(
            s3.client()
            .get_object(Bucket=s3.bucket, Key=f"renders/{name}/manifest.json")["Body"]
            .read()
        )
        assert sorted(o["path"] for o in manifest["outputs"]) == sorted(
            o["path"] for o in doc["outputs"]
        )
    assert "renders/large/large_2048w.webp" in keys
    assert "renders/clip/clip_hls/master.m3u8" in keys
    assert any(k.startswith("renders/clip/clip_hls/240p/seg_") for k in keys)
    head = s3.client().head_object(Bucket=s3.bucket, Key="renders/large/large_512w.avif")
    assert head["ContentType"] == "image/avif"
    avif = next(o for o in image["outputs"] if o["path"].endswith("large_512w.avif"))
    assert head["Metadata"]["sha256"] == avif["sha256"]
    scratch = Path(s3.env["MEDIAPIPE_SCRATCH"])
    assert not scratch.exists() or not any(scratch.rglob("*.*")), "scratch not cleaned"


def test_an_outage_opens_the_shared_breaker_defers_jobs_and_everything_completes_after(
    storage_cli: Cli,
    s3: S3,
    namespace: str,
    redis_url: str,
) -> None:
    for _ in range(2):  # two workers share one breaker
        storage_cli.worker(namespace, "--concurrency", "2", "--no-adaptive", "--log-level", "INFO")
    client = _client(redis_url, namespace)
    breakers = ServiceBreakers(client.redis, namespace=namespace)
    s3.proxy.down()
    res = storage_cli.run(
        "--namespace",
        namespace,
        "submit",
        *[str(FIXTURES / f) for f in IMAGES],
        "--out",
        f"s3://{s3.bucket}/out",
        "--no-wait",
        "--json",
    )
    dag_ids = [d["dag_id"] for d in json.loads(res.stdout)]

    service = f"s3:{s3.proxy.url}/{s3.bucket}"
    wait_for(
        lambda: breakers.states().get(service, {}).get("state") == "open", 30, "the breaker to open"
    )
    # Jobs that were already uploading when it opened finish their call; after that,
    # no job starts a storage call until the 5 s cool-down is over.
    wait_for(
        lambda: not any(j["state"] == "active" for d in dag_ids for j in client.jobs(d).values()),
        10,
        "in-flight jobs",
    )
    opened_after = s3.proxy.calls()
    opened = [
        f for _, f in client.redis.xrange(client.keys.events) if f[b"ev"] == b"breaker_opened"
    ]
    assert opened[0][b"failures"] == b"2"  # it opened on the configured threshold
    assert opened_after <= 2 * len(IMAGES), opened_after
    time.sleep(2.0)  # still inside the cool-down
    assert s3.proxy.calls() == opened_after, "storage was called while the breaker was open"

    # Nothing failed or was lost, and no attempt was spent.
    assert client.dead() == []
    for dag_id in dag_ids:
        assert client.dag_state(dag_id) == "running"
        jobs = client.jobs(dag_id)
        renditions = jobs["image_renditions"]
        assert renditions["state"] in ("delayed", "waiting", "active")
        if renditions["state"] != "active":
            assert renditions["attempts"] == 0
            assert "s3:" in renditions.get("waiting_for", "")

    s3.proxy.up()
    for dag_id in dag_ids:
        wait_for(lambda d=dag_id: client.dag_state(d) == "completed", 60, "DAGs to complete")
    assert breakers.states()[service]["state"] == "closed"
    events = [f[b"ev"].decode() for _, f in client.redis.xrange(client.keys.events)]
    assert (
        events.index("breaker_opened")
        < events.index("breaker_half_open")
        < events.index("breaker_closed")
    )
    for dag_id in dag_ids:
        for job in client.jobs(dag_id).values():
            assert job["attempts"] == 1, (job["name"], job["attempts"])
    logs = []
    for w in storage_cli.procs:
        w.terminate()
        out, _ = w.communicate(timeout=30)
        logs.append(out)
    assert all("deferred" in log for log in logs), "both workers should have deferred work"


def test_access_denied_goes_to_the_dead_letter_queue_at_once(
    storage_cli: Cli,
    s3: S3,
    namespace: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    storage_cli.env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret"
    storage_cli.env["AWS_ACCESS_KEY_ID"] = "unknown-key"
    from tests.storage.conftest import free_port, start_moto

    port = free_port()
    guarded = start_moto(port, tmp_path, {"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        storage_cli.env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
        storage_cli.worker(namespace, "--concurrency", "2", "--no-adaptive", "--log-level", "INFO")
        res = storage_cli.run(
            "--namespace",
            namespace,
            "submit",
            str(FIXTURES / "cmyk.jpg"),
            "--out",
            "s3://private/out",
            "--wait",
            "--json",
        )
        assert res.returncode == 1
        doc: dict[str, Any] = json.loads(res.stdout)
        assert doc["status"] == "failed"
        client = _client(redis_url, namespace)
        dead = client.dead()
        assert [d["name"] for d in dead] == ["image_renditions"]
        assert dead[0]["attempts"] == 1 and dead[0]["error"]["type"] == "PermanentError"
        assert "s3://private/out/cmyk/" in dead[0]["error"]["message"]
        assert "InvalidAccessKeyId" in dead[0]["error"]["message"]
    finally:
        guarded.terminate()
        guarded.wait(10)
