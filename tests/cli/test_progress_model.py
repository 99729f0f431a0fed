"""What the progress display computes, from DAGs moved through the real transitions: a
percent weighted by expected cost that never drops, explicit states, a DAG-level ETA."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from mediajobs import presets
from mediajobs.progress_model import DagView, Monotone, StageSpeeds, media_cost
from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import RetryableError
from pipeline.model import Backoff, Dag
from pipeline.registry import Registry, stage
from pipeline.snapshot import read_dags


@pytest.fixture
def steps(registry: Registry) -> Registry:
    @stage("step", registry=registry, attempts=3, backoff=Backoff(base=0.3, jitter=0.0))
    def step(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        return 1

    return registry


def _view(client: Client, dag_id: str, view: DagView, served: set[str] | None = None) -> None:
    snap = read_dags(client.redis, client.keys, [dag_id])
    view.update(snap.dags[dag_id], snap.now_ms, StageSpeeds(), served)


def _claim(broker: Broker, name: str) -> Any:
    jobs, _ = broker.claim(["default"])
    assert [j.name for j in jobs] == [name]
    return jobs[0]


def test_a_retry_holds_the_percent_and_the_rest_is_spread_over_the_work_left(
    client: Client, broker: Broker, steps: Registry
) -> None:
    dag = Dag()
    dag.add("a", "step")
    dag.add("b", "step", after=["a"])
    client.submit(dag)
    view = DagView(dag.id, "x")
    a = _claim(broker, "a")
    broker.progress(a, 80.0)
    _view(client, dag.id, view)
    assert view.percent.shown == pytest.approx(40.0)  # two jobs of equal weight
    assert view.state == "running step"
    broker.fail(a, RetryableError("transient"))  # the attempt's 80 % is lost
    _view(client, dag.id, view)
    assert view.percent.shown == pytest.approx(40.0)  # held, not 0
    assert view.state.startswith("retrying step in ")
    time.sleep(0.4)  # the retry's backoff
    a = _claim(broker, "a")
    broker.progress(a, 50.0)
    _view(client, dag.id, view)
    # Held at 40 with 2 units of work left then: 40 + 60 x 0.5 / 2.
    assert view.percent.shown == pytest.approx(55.0)
    broker.complete(a, 1)
    _view(client, dag.id, view)
    assert view.percent.shown == pytest.approx(70.0)
    assert view.state == "queued — waiting for a slot"


def test_fan_out_adds_work_without_the_percent_going_back(
    client: Client, broker: Broker, steps: Registry
) -> None:
    dag = Dag()
    dag.add("a", "step")
    dag.add("b", "step", after=["a"])
    client.submit(dag)
    view = DagView(dag.id, "x")
    a = _claim(broker, "a")
    broker.progress(a, 100.0)
    _view(client, dag.id, view)
    before = view.percent.shown
    assert before == pytest.approx(50.0)
    sub = Dag(dag.id)
    for i in range(6):
        sub.add(f"part{i}", "step")
    broker.add_children(a, sub)
    _view(client, dag.id, view)
    assert view.total_cost == pytest.approx(8.0)  # the six new jobs weigh in
    assert view.percent.shown == pytest.approx(before)
    broker.complete(a, 1)
    parts, _ = broker.claim(["default"])
    assert parts and parts[0].name.startswith("part")
    broker.complete(parts[0], 1)
    _view(client, dag.id, view)
    assert before < view.percent.shown < 100.0


def test_a_waiting_job_says_whether_any_worker_serves_its_queue(
    client: Client, steps: Registry
) -> None:
    dag = Dag()
    dag.add("a", "step")
    client.submit(dag)
    view = DagView(dag.id, "x")
    _view(client, dag.id, view, served=set())
    assert view.state == "waiting for a worker"
    _view(client, dag.id, view, served={"default"})
    assert view.state == "queued — waiting for a slot"


def test_the_dag_eta_follows_the_longest_chain_at_measured_speeds(
    client: Client, broker: Broker, steps: Registry
) -> None:
    dag = Dag()
    dag.add("a", "step")
    dag.add("b", "step")
    dag.add("c", "step", after=["a", "b"])
    client.submit(dag)
    speeds = StageSpeeds()
    speeds.record("elsewhere/step", "step", 1.0, 2.0)  # one unit takes 2 s
    snap = read_dags(client.redis, client.keys, [dag.id])
    view = DagView(dag.id, "x")
    view.update(snap.dags[dag.id], snap.now_ms, speeds, None)
    assert view.eta == pytest.approx(4.0)  # a and b side by side (2 s), then c (2 s)
    fresh = DagView(dag.id, "x")
    fresh.update(snap.dags[dag.id], snap.now_ms, StageSpeeds(), None)
    assert fresh.eta is None  # nothing measured: no made-up number


def test_transcodes_weigh_duration_times_pixels_and_images_their_pixels() -> None:
    video = {"width": 1280, "height": 720, "duration": 10.0, "fps": 30.0}
    ladder = media_cost("video_ladder", {"rungs": []}, video)
    longer = media_cost("video_ladder", {"rungs": []}, {**video, "duration": 20.0})
    assert ladder is not None and longer == pytest.approx(2 * ladder)
    photo = {"width": 4000, "height": 3000}
    small = media_cost("image_renditions", {"widths": [1024], "formats": ["jpeg"]}, photo)
    two = media_cost("image_renditions", {"widths": [1024], "formats": ["jpeg", "webp"]}, photo)
    assert small is not None and two is not None and small < two


def test_after_the_probe_a_photo_is_not_a_third_done(
    r: redis.Redis, namespace: str, broker: Broker
) -> None:
    dag = presets.build_dag("/in/p.jpg", "/out/p", presets.load("image"))
    client = Client(r, namespace=namespace)  # the real stages' registry
    client.submit(dag)
    view = DagView(dag.id, "p.jpg")
    probe = _claim(broker, "probe")
    broker.complete(probe, {"kind": "image", "width": 4000, "height": 3000})
    _view(client, dag.id, view)
    assert view.state == "queued — waiting for a slot"
    assert 0 < view.percent.shown < 3  # the old display said 33.3 %
    renditions = _claim(broker, "image_renditions")
    broker.progress(renditions, 50.0)
    _view(client, dag.id, view)
    assert view.state == "running image_renditions"
    assert 45 < view.percent.shown < 55


def test_the_shown_percent_never_drops_whatever_the_sequence() -> None:
    m = Monotone()
    shown = [m.update(d, t) for d, t in [(1, 4), (2, 4), (0.5, 4), (0.5, 8), (3, 8), (8, 8)]]
    assert shown == sorted(shown)
    assert shown[-1] == pytest.approx(99.9)  # 100 only once the DAG completed
    assert m.finish() == 100.0
