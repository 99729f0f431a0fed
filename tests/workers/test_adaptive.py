"""Adaptive concurrency: capacity follows injected load and memory readings."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import replace

import pytest

from pipeline.client import Client
from pipeline.model import Dag
from tests.workers.conftest import ROOT, Workers, wait_for
from workers.adaptive import AdaptiveConcurrency, Limits, LoadReading, PsutilLoad
from workers.node import NodeConfig, WorkerNode

CALM = LoadReading(
    cpu_percent=20.0, load_per_cpu=0.3, mem_available_fraction=0.6, children_rss=100 << 20
)


class FakeLoad:
    def __init__(self) -> None:
        self.reading = CALM

    def read(self) -> LoadReading:
        return self.reading


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_grows_one_slot_at_a_time_with_backlog_and_idle_cpu_after_two_readings() -> None:
    src, clock = FakeLoad(), FakeClock()
    a = AdaptiveConcurrency(src, Limits(min=1, max=4, cooldown=5), initial=2, clock=clock)
    assert a.tick(backlog=True) is None  # hysteresis: one reading is not enough
    change = a.tick(backlog=True)
    assert change is not None and change[0] == 3 and "backlog" in change[1]
    a.tick(backlog=True)
    assert a.tick(backlog=True) == (4, a.reason)
    a.tick(backlog=True)
    assert a.tick(backlog=True) is None and a.capacity == 4  # capped at max


def test_no_growth_without_backlog_or_with_busy_cpu() -> None:
    src = FakeLoad()
    a = AdaptiveConcurrency(src, Limits(min=1, max=8), initial=2, clock=FakeClock())
    for _ in range(5):
        assert a.tick(backlog=False) is None
    src.reading = replace(CALM, cpu_percent=95.0)
    for _ in range(5):
        assert a.tick(backlog=True) is None
    assert a.capacity == 2


def test_shrinks_at_once_under_memory_pressure_overload_or_pool_rss() -> None:
    src, clock = FakeLoad(), FakeClock()
    a = AdaptiveConcurrency(src, Limits(min=1, max=16, rss_limit=1 << 30), initial=16, clock=clock)
    src.reading = replace(CALM, mem_available_fraction=0.05)
    assert a.tick(backlog=True) == (8, "memory pressure: 5% available")
    src.reading = replace(CALM, load_per_cpu=3.0)
    assert a.tick(backlog=True) == (4, "overload: load 3.00 per core")
    src.reading = replace(CALM, children_rss=2 << 30)
    assert a.tick(backlog=True) == (2, "pool RSS 2048 MiB over 1024 MiB")
    src.reading = replace(CALM, mem_available_fraction=0.01)
    a.tick(backlog=True)
    assert a.tick(backlog=True) is None and a.capacity == 1  # floor at min


def test_cooldown_after_a_shrink_delays_growth() -> None:
    src, clock = FakeLoad(), FakeClock()
    a = AdaptiveConcurrency(src, Limits(min=1, max=4, cooldown=10), initial=4, clock=clock)
    src.reading = replace(CALM, mem_available_fraction=0.01)
    a.tick(backlog=True)
    assert a.capacity == 2
    src.reading = CALM
    for _ in range(4):
        clock.now += 1
        assert a.tick(backlog=True) is None
    clock.now += 10
    assert a.tick(backlog=True) == (3, a.reason)


def test_the_real_source_reads_this_machine() -> None:
    r = PsutilLoad().read()
    assert 0 <= r.cpu_percent <= 100 and 0 < r.mem_available_fraction < 1
    assert r.load_per_cpu >= 0 and r.children_rss == 0


def test_a_running_node_shrinks_and_grows_with_injected_readings(
    redis_url: str, namespace: str, stage_client: Client
) -> None:
    src = FakeLoad()
    node = WorkerNode(
        redis_url,
        config=NodeConfig(
            namespace=namespace,
            concurrency=4,
            min=1,
            adapt_interval=0.05,
            adapt_cooldown=0.2,
            heartbeat=0.1,
            start_method="forkserver",
            preload=("tests.workers.sample_stages",),
        ),
        load_source=src,
    )
    t = threading.Thread(target=node.run, kwargs={"install_signals": False})
    t.start()
    try:

        def capacity() -> tuple[int, str]:
            ws = [w for w in stage_client.workers() if w["id"] == node.worker_id]
            return (int(ws[0]["capacity"]), ws[0]["capacity_reason"]) if ws else (0, "")

        wait_for(lambda: capacity()[0] == 4, what="the node to register")
        src.reading = replace(CALM, mem_available_fraction=0.02)
        _cap, reason = wait_for(
            lambda: capacity() if capacity()[0] == 1 else None, what="capacity to halve down to 1"
        )
        assert reason.startswith("memory pressure")

        src.reading = CALM
        dag = Dag()
        for i in range(40):
            dag.add(f"s{i}", "t.sleep", {"seconds": 0.2})
        stage_client.submit(dag)
        wait_for(lambda: capacity()[0] >= 3, what="capacity to grow back with a backlog")
        assert capacity()[1].startswith("backlog and idle CPU")
    finally:
        node.request_stop()
        t.join(30)
    assert not t.is_alive()


def test_a_worker_pinned_to_one_core_sizes_its_pool_to_that_core(
    workers: Workers, stage_client: Client
) -> None:
    """``taskset -c 0 mediapipe worker``: one job at a time, not one per machine core."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    proc = workers.spawn(affinity={0})
    wid = workers.worker_id(proc)
    info = next(w for w in stage_client.workers() if w["id"] == wid)
    assert int(info["capacity"]) == 1
    script = (
        "from workers.adaptive import Limits, usable_cores; print(usable_cores(), Limits().max)"
    )
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", script],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert out.stdout.split() == ["1", "1"]
