"""A fleet with no shared disk: workers that cannot read the submitter's folder render
inputs staged to object storage (moto), and the outputs come back to ``--out``.

The workers run in their own mount namespace with an empty tmpfs over the submitter's
folder (``unshare --mount``), so reading the submitter's files is impossible for them,
not merely unneeded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.client import Client
from stages.output import sha256_of
from stages.segments import joined_facts
from tests.cli.conftest import FIXTURES, Cli
from tests.storage.conftest import S3
from tests.workers.conftest import wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare to give the workers their own mount namespace",
)


def blind_worker(cli: Cli, namespace: str, hidden: Path, cache: Path) -> subprocess.Popen[str]:
    """A `mediapipe worker` that sees an empty folder where ``hidden`` is, and fetches
    inputs into its own cache (a node of its own)."""
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs none "$0" && exec "$@"', str(hidden),
         sys.executable, "-m", "mediajobs", "--namespace", namespace, "worker",
         "--concurrency", "1", "--no-adaptive", "--grace", "5", "--log-level", "INFO"],
        cwd=cli.cwd, env={**cli.env, "MEDIAPIPE_INPUT_CACHE": str(cache)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    cli.procs.append(proc)
    return proc


def test_workers_that_cannot_read_the_submitter_render_staged_inputs_and_outputs_come_back(
    storage_cli: Cli, s3: S3, namespace: str, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    photo, video = mine / "photo.jpg", mine / "talk.mp4"
    shutil.copyfile(FIXTURES / "large.jpg", photo)
    shutil.copyfile(FIXTURES / "clip.mp4", video)
    # Staged inputs outlive their DAGs by an hour here, so that the second submit below
    # finds the photo staged (their removal: test_staged_retention.py).
    storage_cli.env["MEDIAPIPE_STAGE_RETENTION"] = "1h"
    for i in range(2):
        blind_worker(storage_cli, namespace, mine, tmp_path / f"cache{i}")
    out = mine / "renders"
    stage = f"s3://{s3.bucket}/staging"
    res = storage_cli.run(
        "--namespace", namespace, "submit", str(photo), str(video), "--stage", stage,
        "--out", str(out), "--wait", "--json", timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    docs = json.loads(res.stdout)
    assert [d["status"] for d in docs] == ["completed", "completed"], docs
    for doc, src in zip(docs, (photo, video), strict=True):
        sha = sha256_of(src)
        staged = doc["input"]["staged"]
        assert staged == {"uri": f"{stage}/inputs/{sha}{src.suffix}", "uploaded": True}
        manifest = json.loads(Path(doc["manifest"]).read_text())
        assert manifest["input"]["sha256"] == sha
        assert Path(doc["manifest"]).parent == out / src.stem
        for o in doc["outputs"]:
            local = Path(o["path"])
            assert local.is_relative_to(out / src.stem) and local.stat().st_size == o["bytes"]
            assert sha256_of(local) == o["sha256"]
            if o["kind"] == "video":
                assert joined_facts(local).frames > 0
    assert (out / "talk" / "talk_hls" / "master.m3u8").exists()  # whole folders come back

    # The same photo again: the stage has it, nothing is uploaded.
    again = storage_cli.run(
        "--namespace", namespace, "submit", str(photo), "--stage", stage, "--out",
        str(tmp_path / "again"), "--wait", "--json", timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["status"] == "completed" and doc["input"]["staged"]["uploaded"] is False

    # Later, from anywhere: `mediapipe fetch` brings a DAG's outputs again.
    fetched = storage_cli.run(
        "--namespace", namespace, "fetch", docs[0]["dag_id"], "--out", str(tmp_path / "later")
    )
    assert fetched.returncode == 0, fetched.stderr
    assert sorted(p.name for p in (tmp_path / "later" / "photo").iterdir()) == sorted(
        p.name for p in (out / "photo").iterdir()
    )


def _input_gets(s3: S3, key: str, since: int = 0) -> int:
    return sum(1 for m, p in s3.proxy.lines[since:] if m == "GET" and p.endswith(key))


def test_one_download_per_node_an_outage_defers_and_a_kill_mid_download_leaves_nothing(
    storage_cli: Cli, s3: S3, namespace: str, tmp_path: Path, stage_client: Client
) -> None:
    from stages.ffmpeg_run import ffmpeg_exe

    mine = tmp_path / "mine"
    mine.mkdir()
    video = mine / "big.mp4"  # a few MB, so that a slowed store takes seconds to send it
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440", "-t", "4", "-c:v", "libx264", "-preset",
         "ultrafast", "-qp", "4", "-c:a", "aac", "-shortest", str(video)],
        check=True,
    )  # fmt: skip
    stage = f"s3://{s3.bucket}/staging"
    queued = storage_cli.run(
        "--namespace", namespace, "submit", str(video), "--stage", stage, "--out",
        str(mine / "renders"), "--no-wait", "--json",
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    doc = json.loads(queued.stdout)
    dag_id, key = doc["dag_id"], doc["input"]["staged"]["uri"].split("/", 3)[3]
    puts = [p for m, p in s3.proxy.lines if m == "PUT" and key in p]
    assert puts  # staged: one upload (a multipart upload's parts name the key too)

    # A node killed while it downloads: its partial copy is never used.
    s3.proxy.delay = 0.05
    cache_a = tmp_path / "cache-a"
    first = blind_worker(storage_cli, namespace, mine, cache_a)
    wait_for(lambda: list(cache_a.glob("*.part")), 60, "the first node to be downloading")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    assert list(cache_a.glob("*.part")) and not [
        p for p in cache_a.iterdir() if not p.name.endswith((".part", ".lock"))
    ]

    # The store goes down while another node fetches: its jobs are deferred, no attempt
    # spent; once the store is back every job completes, the input fetched once there.
    s3.proxy.down()
    s3.proxy.delay = 0.0
    mark = len(s3.proxy.lines)
    second = blind_worker(storage_cli, namespace, mine, tmp_path / "cache-b")
    wait_for(lambda: s3.proxy.refused >= 2, 60, "the second node to try the store")

    def breaker_opened() -> bool:
        # The fetches go through the store's fleet-wide breaker: the outage opens it.
        events = stage_client.redis.xrange(stage_client.keys.events)
        return any(b"breaker_opened" in b"".join(f.values()) for _, f in events)

    wait_for(breaker_opened, 90, "the store's breaker to open")
    assert stage_client.dag_state(dag_id) == "running"
    s3.proxy.up()
    wait_for(lambda: stage_client.dag_state(dag_id) == "completed", 180, "the DAG")
    jobs = stage_client.jobs(dag_id)
    assert int(jobs["probe"]["attempts"]) <= 2  # the kill cost the probe one attempt at most
    assert all(int(j["attempts"]) == 1 for n, j in jobs.items() if n != "probe"), {
        n: j["attempts"] for n, j in jobs.items()
    }
    assert _input_gets(s3, key, mark) == 1  # probe, ladder, poster, sprite, audio: one GET
    assert not list((tmp_path / "cache-b").glob("*.mp4"))  # the manifest's node forgot it

    # The killed node comes back (alone): its next download sweeps the dead one's partial
    # file.
    os.killpg(second.pid, signal.SIGTERM)
    second.wait(30)
    photo = mine / "photo.jpg"
    shutil.copyfile(FIXTURES / "large.jpg", photo)
    blind_worker(storage_cli, namespace, mine, cache_a)
    res = storage_cli.run(
        "--namespace", namespace, "submit", str(photo), "--stage", stage, "--out",
        str(mine / "renders"), "--wait", "--json", timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert not list(cache_a.glob("*.part"))


def test_an_s3_input_is_probed_and_planned_on_a_worker_and_bad_media_is_refused(
    storage_cli: Cli, s3: S3, namespace: str, stage_client: Client
) -> None:
    s3.client().upload_file(str(FIXTURES / "clip.mp4"), s3.bucket, "in/talk.mp4")
    s3.client().upload_file(str(FIXTURES / "truncated.mp4"), s3.bucket, "in/broken.mp4")
    storage_cli.worker(namespace, "--concurrency", "2", "--no-adaptive")
    uri = f"s3://{s3.bucket}/in/talk.mp4"
    res = storage_cli.run(
        "--namespace", namespace, "submit", uri, "--out", f"s3://{s3.bucket}/renders",
        "--wait", "--json", timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "completed", doc
    jobs = stage_client.jobs(doc["dag_id"])
    assert jobs["locate"]["stage"] == "probe" and jobs["plan"]["state"] == "completed"
    assert jobs["probe"]["stage"] == "known_facts"  # probed once, on a worker
    assert {"video_ladder", "hls_package", "manifest"} <= set(jobs)
    manifest = json.loads(
        s3.client().get_object(Bucket=s3.bucket, Key="renders/talk/manifest.json")["Body"].read()
    )
    assert manifest["input"]["sha256"] == sha256_of(FIXTURES / "clip.mp4")
    assert manifest["input"]["path"] == uri
    assert any(o["path"].endswith("talk_720p.mp4") or "talk_" in o["path"] for o in doc["outputs"])

    bad = f"s3://{s3.bucket}/in/broken.mp4"
    res = storage_cli.run(
        "--namespace", namespace, "submit", bad, "--out", f"s3://{s3.bucket}/renders",
        "--wait", timeout=300,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    said = res.stderr.splitlines()
    lines = [x for x in said if x.startswith("mediapipe:") and "submitted" not in x]
    assert len(lines) == 1 and lines[0].startswith(f"mediapipe: {bad}: "), res.stderr
