"""A schedule's webhook: stored with it, checked when added, given to every DAG it fires."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

import stages  # noqa: F401  (registers the media stages the image preset submits)
from mediajobs.schedule_commands import schedule_group
from mediajobs.schedule_firing import Scheduler
from pipeline.client import Client
from pipeline.errors import SubmissionError
from pipeline.registry import REGISTRY
from pipeline.schedules import Schedules

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
HOOK = "https://hooks.example.com/mediapipe"


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_every_dag_a_schedule_fires_carries_its_webhook(
    r: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    client = Client(r, namespace=namespace, registry=REGISTRY)
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "cmyk.jpg"
    shutil.copyfile(FIXTURES / "cmyk.jpg", src)
    clock = Clock(1_900_000_000)
    spec = Schedules(client, clock=clock).add(
        "hooked", str(src), every=60, preset="image", out=str(tmp_path / "out"), webhook=HOOK
    )
    assert spec.webhook == HOOK
    stored = Schedules(client, clock=clock).get("hooked")
    assert stored is not None and stored.webhook == HOOK
    clock.t += 60
    (fired,) = Scheduler(client, clock=clock).tick()
    (sub,) = fired.submitted
    dag = client.dag(sub.dag_id)
    assert dag is not None and json.loads(dag["webhook"])["url"] == HOOK
    assert json.loads(dag["webhook"])["roots"] == ["manifest"]


def test_a_bad_webhook_is_refused_when_the_schedule_is_added(
    r: redis.Redis, namespace: str, redis_url: str, tmp_path: Path
) -> None:
    client = Client(r, namespace=namespace, registry=REGISTRY)
    with pytest.raises(SubmissionError, match="only http and https"):
        Schedules(client).add("bad", str(tmp_path), every=60, webhook="file:///etc/passwd")
    res = CliRunner().invoke(
        schedule_group(),
        ["add", "bad", "--every", "1m", "--webhook", "ftp://example.com/", str(tmp_path)],
        obj={"url": redis_url, "namespace": namespace},
    )
    assert res.exit_code == 2, res.output
    assert "only http and https" in res.output
    assert not r.hexists(client.keys.schedules, "bad")
