"""A worker node's scheduler probes drop-folder files out of its own process: a decoder that
crashes on a file takes a throwaway child with it, never the node that holds the leases."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pyvips

from pipeline.client import Client
from pipeline.schedules import Schedules
from tests.workers.conftest import Workers, wait_for


def _events(client: Client, ev: str) -> list[dict[str, str]]:
    entries: Any = client.redis.xrange(client.keys.events)
    out = []
    for _, raw in entries:
        f = {k.decode(): v.decode() for k, v in raw.items()}
        if f["ev"] == ev:
            out.append(f)
    return out


def _jpeg(colour: list[int]) -> bytes:
    image = (pyvips.Image.black(64, 48, bands=3) + colour).cast("uchar")
    return bytes(image.jpegsave_buffer(Q=90))


def test_a_decoder_crash_while_probing_a_dropped_file_leaves_the_worker_running(
    workers: Workers, stage_client: Client, tmp_path: Path, monkeypatch: Any
) -> None:
    drop, out = tmp_path / "drop", tmp_path / "out"
    drop.mkdir()
    # libjpeg warns about junk bytes before a marker while it reads the header. With GLib's
    # fatal-warnings (set for the worker below), that warning aborts the process that
    # reads the header: a real decoder crash, on demand, in whichever process probes.
    good = _jpeg([200, 30, 30])
    marker = good.index(b"\xff\xdb")
    (drop / "crash.jpg").write_bytes(good[:marker] + b"\x00\x01\x02" + good[marker:])
    (drop / "fine.jpg").write_bytes(good)
    monkeypatch.setenv("G_DEBUG", "fatal-warnings")
    proc = workers.spawn("--concurrency", "1")
    Schedules(stage_client).add("drop", str(drop), every=1, preset="image", out=str(out), settle=0)

    wait_for(
        lambda: _events(stage_client, "schedule_rejected") or proc.poll() is not None,
        30,
        "a rejection, or the worker's death",
    )
    assert proc.poll() is None, f"the worker died ({proc.returncode}): {workers.log(proc)}"
    rejected = _events(stage_client, "schedule_rejected")
    assert [Path(e["input"]).name for e in rejected] == ["crash.jpg"]
    assert "the probe crashed (SIGABRT)" in rejected[0]["error"]
    submitted = _events(stage_client, "schedule_submitted")
    assert [Path(e["input"]).name for e in submitted] == ["fine.jpg"]
    # The crashing file is remembered as seen: later ticks do not probe it again.
    time.sleep(2.5)
    assert len(_events(stage_client, "schedule_rejected")) == 1
    assert proc.poll() is None and os.getpid() != proc.pid
