"""The DAG's last stage removes what any attempt of its DAG left in the output folder (a
worker killed with SIGKILL cannot), and nothing of other DAGs or other tools."""

from __future__ import annotations

import hashlib
from pathlib import Path

import redis

import stages  # noqa: F401  (registers the media stages)
from mediajobs import presets
from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.registry import REGISTRY
from tests.helpers import run_dag


def _key(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def test_the_manifest_removes_leftovers_of_its_dag_only(
    media: Path, tmp_path: Path, r: redis.Redis, namespace: str
) -> None:
    client = Client(r, namespace=namespace, registry=REGISTRY)
    broker = Broker(r, namespace=namespace, registry=REGISTRY, lease=30)
    out = tmp_path / "large"
    dag = presets.build_dag(str(media / "large.jpg"), str(out), presets.load("image"))
    out.mkdir()
    ladder = _key(dag.job_id("image_renditions"))
    ours = [
        out / f".gone_1024.webp.{_key(dag.id)}-{ladder}-1-0a1b2c.part.webp",
        out / f".gone_hls.{_key(dag.id)}-{ladder}-2-3d4e5f.part",
    ]
    ours[0].write_bytes(b"x" * 1000)
    ours[1].mkdir()
    (ours[1] / "seg0.m4s").write_bytes(b"x")
    others = [
        out / f".other.jpg.{_key('another-dag')}-{ladder}-1-0a1b2c.part.jpg",
        out / ".untagged.jpg.1234abcd.part.jpg",
    ]
    for p in others:
        p.write_bytes(b"y")

    client.submit(dag)
    assert run_dag(client, broker, dag.id, timeout=60) == "completed"
    assert (out / "manifest.json").is_file()
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in others)
