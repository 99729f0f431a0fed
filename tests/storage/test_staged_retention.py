"""Staged inputs removed once the DAGs that use them ended (MEDIAPIPE_STAGE_RETENTION):
real `mediapipe submit` and `mediapipe worker` processes, moto's S3 server behind the
counting proxy, the suite's Redis."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from mediajobs.staged_inputs import StagedInputs, object_id, sweep
from pipeline.client import Client
from tests.cli.conftest import FIXTURES, Cli
from tests.storage.conftest import S3
from tests.workers.conftest import wait_for

STAGE = "staging"


@pytest.fixture
def here(s3: S3, monkeypatch: pytest.MonkeyPatch) -> S3:
    """This process reaches the store as the workers do (sweeps run here too)."""
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MEDIAPIPE_BREAKER_FAILURES", "2")
    return s3


def _submit(cli: Cli, ns: str, src: Path, out: Path, *args: str, **env: str) -> dict[str, Any]:
    before = dict(cli.env)
    cli.env.update(env)
    try:
        res = cli.run(
            "--namespace", ns, "submit", str(src), "--stage", f"s3://{_bucket(cli)}/{STAGE}",
            "--out", str(out), "--json", *args, timeout=300,
        )  # fmt: skip
    finally:
        cli.env = before
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _bucket(cli: Cli) -> str:
    return cli.env["MEDIAPIPE_TEST_BUCKET"]


def _exists(s3: S3, uri: str) -> bool:
    try:
        s3.client().head_object(Bucket=s3.bucket, Key=uri.split("/", 3)[3])
    except Exception as exc:
        assert "404" in str(exc), exc
        return False
    return True


def _users(client: Client, uri: str) -> dict[str, str]:
    raw: Any = client.redis.hgetall(client.keys.staged_users(object_id(uri, None)))
    return {k.decode(): v.decode() for k, v in raw.items()}


@pytest.fixture
def staging_cli(storage_cli: Cli, s3: S3, tmp_path: Path) -> Cli:
    storage_cli.env["MEDIAPIPE_TEST_BUCKET"] = s3.bucket
    (tmp_path / "mine").mkdir()
    return storage_cli


def test_an_object_two_dags_share_goes_when_the_second_ended(
    staging_cli: Cli, here: S3, namespace: str, stage_client: Client, tmp_path: Path
) -> None:
    photo = tmp_path / "mine" / "photo.jpg"
    shutil.copyfile(FIXTURES / "large.jpg", photo)
    first = _submit(staging_cli, namespace, photo, tmp_path / "r1", "--no-wait")
    second = _submit(staging_cli, namespace, photo, tmp_path / "r2", "--no-wait")
    uri = first["input"]["staged"]["uri"]
    assert second["input"]["staged"] == {"uri": uri, "uploaded": False}  # one object
    assert _users(stage_client, uri) == {first["dag_id"]: "0", second["dag_id"]: "0"}
    # Every key of the record is in the namespace's hash tag.
    for key in stage_client.redis.scan_iter(match=stage_client.keys.pattern()):
        assert key.decode().startswith(stage_client.keys.prefix)

    # The first DAG ends (cancelled): the second still uses the object, it stays.
    assert staging_cli.run("--namespace", namespace, "cancel", first["dag_id"]).returncode == 0
    done, _ = sweep(stage_client)
    assert done.deleted == [] and done.kept == 1
    assert _exists(here, uri)

    # A worker runs the second to its end; its retention pass deletes the object.
    staging_cli.env["MEDIAPIPE_RETENTION_INTERVAL"] = "1s"
    staging_cli.worker(namespace, "--concurrency", "2", "--no-adaptive")
    wait_for(lambda: stage_client.dag_state(second["dag_id"]) == "completed", 180, "the DAG")
    wait_for(lambda: not _exists(here, uri), 30, "the worker to delete the staged input")
    # The sweep reports the deletion to Redis (staged_deleted) after the store's DELETE
    # returned: the record goes a moment after the object.
    wait_for(lambda: _users(stage_client, uri) == {}, 30, "the staged record to go")
    deletes = [p for m, p in here.proxy.lines if m == "DELETE"]
    assert len(deletes) == 1 and deletes[0].endswith(uri.split("/", 3)[3])
    assert not stage_client.redis.hlen(stage_client.keys.staged)

    # Submitted again: uploaded again, as the stage no longer has it.
    again = _submit(staging_cli, namespace, photo, tmp_path / "r3", "--wait")
    assert again["status"] == "completed" and again["input"]["staged"]["uploaded"] is True


def test_never_a_grace_period_and_the_submitter_sweeping_its_own(
    staging_cli: Cli, here: S3, namespace: str, stage_client: Client, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    kept, gone, later = mine / "kept.jpg", mine / "gone.png", mine / "later.jpg"
    shutil.copyfile(FIXTURES / "large.jpg", kept)
    shutil.copyfile(FIXTURES / "alpha.png", gone)
    shutil.copyfile(FIXTURES / "cmyk.jpg", later)
    # Workers that sweep nothing: what goes is deleted by the submit that waited.
    staging_cli.env["MEDIAPIPE_RETENTION"] = "off"
    staging_cli.worker(namespace, "--concurrency", "2", "--no-adaptive")

    never = _submit(
        staging_cli, namespace, kept, tmp_path / "o1", "--wait", MEDIAPIPE_STAGE_RETENTION="never"
    )
    assert never["status"] == "completed"
    kept_uri = never["input"]["staged"]["uri"]
    assert _exists(here, kept_uri) and _users(stage_client, kept_uri) == {"keep": "1"}
    assert sweep(stage_client)[0].deleted == []

    ended = _submit(staging_cli, namespace, gone, tmp_path / "o2", "--wait")
    assert ended["status"] == "completed"
    assert not _exists(here, ended["input"]["staged"]["uri"])  # deleted by the submit

    # Kept for good, also when a later submit of the same file asks for less.
    assert _submit(staging_cli, namespace, kept, tmp_path / "o3", "--wait")["status"] == (
        "completed"
    )
    assert _exists(here, kept_uri)

    graced = _submit(
        staging_cli, namespace, later, tmp_path / "o4", "--wait", MEDIAPIPE_STAGE_RETENTION="3s"
    )
    later_uri = graced["input"]["staged"]["uri"]
    assert _exists(here, later_uri)  # within its grace
    time.sleep(3.2)
    assert sweep(stage_client)[0].deleted == [later_uri]
    assert not _exists(here, later_uri) and _exists(here, kept_uri)

    staging_cli.env["MEDIAPIPE_STAGE_RETENTION"] = "soon"
    bad = staging_cli.run(
        "--namespace", namespace, "submit", str(later), "--stage", f"s3://{here.bucket}/x",
        "--out", str(tmp_path / "o5"), "--no-wait",
    )  # fmt: skip
    # One line, as submit says a bad --stage (and before anything is uploaded).
    assert bad.returncode == 1 and "MEDIAPIPE_STAGE_RETENTION='soon'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_a_store_that_fails_keeps_the_object_for_a_later_pass_and_holds_wait(
    staging_cli: Cli, here: S3, namespace: str, stage_client: Client, tmp_path: Path
) -> None:
    photo = tmp_path / "mine" / "p.jpg"
    shutil.copyfile(FIXTURES / "cmyk.jpg", photo)
    doc = _submit(staging_cli, namespace, photo, tmp_path / "o", "--no-wait")
    uri = doc["input"]["staged"]["uri"]
    assert staging_cli.run("--namespace", namespace, "cancel", doc["dag_id"]).returncode == 0

    here.proxy.down()
    done, _ = sweep(stage_client)
    assert done.deleted == [] and done.failed == 1 and "unreachable" in (done.error or "")
    breaker = stage_client.keys.breaker(f"s3:{here.proxy.url}/{here.bucket}")
    assert stage_client.redis.hget(breaker, "failures") == b"1"  # counted by the breaker
    oid = object_id(uri, None)
    assert not stage_client.redis.exists(stage_client.keys.staged_deleting(oid))
    here.proxy.up()
    assert _exists(here, uri)
    assert sweep(stage_client)[0].deleted == [uri]
    assert not _exists(here, uri)

    # While a sweeper deletes an object, a submit that wants it waits for the deletion.
    ledger = StagedInputs(stage_client, grace_ms=0)
    ledger.hold(uri, None)
    ledger.use([(uri, None, "some-dag")])  # a DAG id that never existed: counts as gone
    reply = stage_client.scripts.run("staged_release", stage_client.keys.prefix, oid, "t", 5000)
    assert int(reply[0]) == 1
    wait = stage_client.scripts.run("staged_hold", stage_client.keys.prefix, oid, "{}", "x", 1000)
    assert 0 < int(wait) <= 5000
    assert stage_client.scripts.run("staged_deleted", stage_client.keys.prefix, oid, "t", 1) == 1
    started = time.monotonic()
    StagedInputs(stage_client, grace_ms=0).hold(uri, None)
    assert time.monotonic() - started < 1
