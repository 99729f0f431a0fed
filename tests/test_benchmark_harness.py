"""The benchmark harness's own logic on tiny inputs; no benchmark runs in the suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.common import Figure, rep_order
from benchmarks.report import markdown

REPO = Path(__file__).resolve().parent.parent


def test_no_case_always_runs_first() -> None:
    cases = ("pipeline", "pyvips_pool", "pillow_pool")
    orders = [rep_order(cases, rep) for rep in range(4)]
    assert orders[0] == ["pipeline", "pyvips_pool", "pillow_pool"]
    assert orders[1] == ["pillow_pool", "pyvips_pool", "pipeline"]
    assert [o[0] for o in orders].count("pipeline") == 2
    assert all(sorted(o) == sorted(cases) for o in orders)


def test_a_ratio_is_against_the_best_other_in_the_figures_direction() -> None:
    rate = Figure("images", "", "renditions/s", 36.6, {"pyvips": 38.1, "pillow": 38.6},
                  target=">= 0.95")  # fmt: skip
    assert rate.best_other == "pillow"
    assert rate.ratio == pytest.approx(36.6 / 38.6)
    assert rate.target_met is False  # 0.948: the faster peer decides
    rss = Figure("rss", "", "MB", 84.9, {"pillow": 53.9}, higher_is_better=False,
                 target="<= 100 MB", target_on="ours")  # fmt: skip
    assert rss.best_other == "pillow" and rss.target_met is True
    missing = Figure("x", "", "jobs/s", None, {"peer": 10.0}, target=">= 1.5")
    assert missing.ratio is None and missing.target_met is None


def test_a_saved_run_prints_as_a_table_with_every_figure() -> None:
    # What ``run.py --report`` prints; it needs none of the media libraries (bench extra).
    doc = json.loads((REPO / "docs" / "results" / "run-2026-11-24-4.json").read_text())
    out = markdown(doc["meta"], doc["comparisons"])
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    figures = sum(len(c["figures"]) for c in doc["comparisons"].values())
    assert len(rows) == figures + 1  # the header
    assert {row.split(" | ")[0].lstrip("| ") for row in rows[1:]} == set(doc["comparisons"])
    video = next(row for row in rows if "through the pipeline vs the same ffmpeg" in row)
    assert video.endswith("| 1.01 | ratio >= 0.97 | yes |")


def test_bullmq_node_is_a_bulk_enqueue_peer_and_a_processing_peer() -> None:
    from benchmarks import queue_bench as qb

    def case(lib: str, enqueue: float, process: float | None = None) -> dict[str, object]:
        return {"lib": lib, "ok_reps": 1, "enqueue_rate_median": enqueue,
                "process_rate_median": process}  # fmt: skip

    summary = {
        qb.FLOOR_CASE: case("floor", 100_000.0, 10_000.0),
        "huey-process-w2": case("huey", 6_000.0, 4_500.0),
        qb.NODE_ENQUEUE: case(qb.NODE_LIB, 21_000.0),
        qb.NODE_PROCESS: case(qb.NODE_LIB, 20_000.0, 5_000.0),
        qb.MP_SUBMIT: case("mediapipe", 8_000.0),
        qb.MP_BULK: case("mediapipe", 22_000.0, 8_000.0),
    }
    c = qb.compare(summary)
    # addBulk is a bulk enqueue: never the reference for Client.submit, one DAG per call.
    assert set(c["enqueue_single"]["others"]) == {"huey-process-w2"}
    assert c["enqueue_bulk"]["best_peer"] == qb.NODE_ENQUEUE
    assert c["process"]["others"] == {"huey-process-w2": 4_500.0, qb.NODE_PROCESS: 5_000.0}
    assert c["process"]["best_peer"] == qb.NODE_PROCESS


def test_the_bullmq_node_lockfile_holds_the_pinned_versions() -> None:
    folder = REPO / "benchmarks" / "bullmq_node"
    pins = json.loads((folder / "package.json").read_text())["dependencies"]
    lock = json.loads((folder / "package-lock.json").read_text())["packages"]
    assert pins == {"bullmq": "6.7.0", "ioredis": "6.0.0"}
    assert lock[""]["dependencies"] == pins
    for pkg, version in pins.items():
        assert lock[f"node_modules/{pkg}"]["version"] == version
