"""The GPU image path end to end: a worker with nvJPEG runs a batch lane that claims the
image jobs routed to it and renders them in batches. Run on PyTorch's CPU device here
(MEDIAPIPE_GPU_DEVICE=cpu): the same code as on a GPU, with libjpeg-turbo standing in for
nvJPEG. Skipped where torch and torchvision are not installed (the `gpu` extra)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import pyvips

from pipeline.client import Client
from pipeline.model import Dag
from stages.gpu_images import torch_available
from tests.workers.conftest import Workers, wait_for

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

pytestmark = pytest.mark.skipif(
    not torch_available(), reason="torch and torchvision (the gpu extra) are not installed"
)


def test_image_jobs_go_to_the_lane_and_render_in_batches(
    workers: Workers, stage_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIAPIPE_GPU_DEVICE", "cpu")
    inputs = []
    for i in range(6):
        src = tmp_path / f"in{i}.jpg"
        shutil.copy(FIXTURES / "large.jpg", src)
        inputs.append(src)
    shutil.copy(FIXTURES / "cmyk.jpg", tmp_path / "in_cmyk.jpg")  # falls back, same lane
    inputs.append(tmp_path / "in_cmyk.jpg")

    workers.spawn("--tags", "nvjpeg", "--concurrency", "1")
    wait_for(
        lambda: any("default@nvjpeg" in w.get("queues", "") for w in stage_client.workers()),
        60,
        "the image lane to register",
    )
    dags = []
    for src in inputs:
        dag = Dag()
        params = {"input": str(src), "out_dir": str(tmp_path / "out"), "widths": [400, 100]}
        dag.add("img", "image_renditions", {**params, "formats": ["jpeg", "webp"]})
        dags.append(dag)
    stage_client.submit_many(dags)
    for d in dags:
        wait_for(lambda d=d: stage_client.dag_state(d.id) == "completed", 120, f"DAG {d.id}")

    jobs = [stage_client.jobs(d.id)["img"] for d in dags]
    assert {j["queue"] for j in jobs} == {"default@nvjpeg"}
    assert max(j["result"]["stage_info"].get("batch", 1) for j in jobs) > 1
    for j in jobs:
        for r in j["result"]["renditions"]:
            img = pyvips.Image.new_from_file(r["path"])
            assert (img.width, img.height) == (r["width"], r["height"])
            assert img.width in (400, 100)
