"""The video ladder's GPU modes: which jobs use the GPU, the commands they run, and (on a
box with NVDEC) that the GPU ladder's outputs match the CPU ladder's."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import BadInputError
from stages.ladder_graph import gpu_mode, ladder_command, plan_rungs
from stages.probe import probe
from stages.video import video_ladder
from tests.stages.conftest import RecordingContext
from workers.gpu import detect

RUNGS = [{"name": "240p", "height": 240}, {"name": "120p", "height": 120}]


def test_auto_follows_the_capabilities_the_job_was_routed_for() -> None:
    assert gpu_mode("auto", set()) == ""
    assert gpu_mode("auto", {"gpu", "nvjpeg"}) == ""
    assert gpu_mode("auto", {"gpu", "nvdec"}) == "decode"
    assert gpu_mode("auto", {"nvdec", "nvenc"}) == "nvenc"
    assert gpu_mode("auto", {"nvenc"}) == ""  # encode on the GPU needs decode there
    assert gpu_mode("off", {"nvdec", "nvenc"}) == ""
    assert gpu_mode("decode", set()) == "decode"  # asked for explicitly
    with pytest.raises(BadInputError, match="gpu must be"):
        gpu_mode("cuda", set())


def test_gpu_commands_decode_and_scale_on_the_device() -> None:
    rungs = plan_rungs(
        1920, 1080, [{"name": "720p", "height": 720}, {"name": "480p", "height": 480}]
    )
    outs = ["a.mp4", "b.mp4"]
    cpu = ladder_command("in.mp4", rungs, outs, has_audio=True)
    decode = ladder_command("in.mp4", rungs, outs, has_audio=True, gpu="decode")
    nvenc = ladder_command("in.mp4", rungs, outs, has_audio=True, gpu="nvenc")

    assert "-hwaccel" not in cpu and "scale_cuda" not in " ".join(cpu)
    for cmd in (decode, nvenc):
        i = cmd.index("-i")
        assert cmd[cmd.index("-hwaccel") + 1] == "cuda" and cmd.index("-hwaccel") < i
        assert cmd[cmd.index("-hwaccel_output_format") + 1] == "cuda"
        graph = cmd[cmd.index("-filter_complex") + 1]
        assert "scale_cuda=1280:720:format=yuv420p" in graph
        assert "scale_cuda=854:480:format=yuv420p" in graph
        # The input stays confined to the file itself on the GPU path too.
        assert cmd[cmd.index("-protocol_whitelist") + 1] == "file"
    # Hopper (no NVENC): frames come back to memory for x264 with the CPU ladder's options.
    assert "hwdownload" in decode[decode.index("-filter_complex") + 1]
    assert decode.count("libx264") == 2 and "h264_nvenc" not in decode
    assert decode.count("-crf") == cpu.count("-crf") == 2
    # NVENC: encoded on the device, constant quality, IDR keyframes where HLS cuts.
    assert "hwdownload" not in nvenc[nvenc.index("-filter_complex") + 1]
    assert nvenc.count("h264_nvenc") == 2 and "libx264" not in nvenc
    assert nvenc.count("-cq") == 2 and nvenc.count("-forced-idr") == 2


def test_a_rotated_video_routed_to_a_gpu_queue_is_transcoded_on_the_cpu(
    media: Path, tmp_path: Path
) -> None:
    # ffmpeg rotates in software filters, which cannot take frames held on the GPU: the
    # stage keeps such a job on the CPU and the result is still upright. This runs here,
    # where a GPU command would fail, so it proves the CPU path was taken.
    src = media / "rotated_phone.mp4"
    ctx = RecordingContext(tags=frozenset({"gpu", "nvdec"}))
    res = video_ladder(ctx, {"input": str(src), "out_dir": str(tmp_path)}, {"probe": probe(src)})
    assert res["gpu"] == "off"
    assert "-hwaccel" not in res["command"]
    assert [(r["width"], r["height"]) for r in res["renditions"]] == [(180, 320)]


@functools.cache
def _nvdec() -> bool:
    return bool(detect().found.get("nvdec"))


@pytest.mark.skipif("not _nvdec()", reason="needs a GPU whose NVDEC passes the trial decode")
@pytest.mark.parametrize("mode", ["decode", "nvenc"])
def test_the_gpu_ladder_matches_the_cpu_ladder(media: Path, tmp_path: Path, mode: str) -> None:
    if mode == "nvenc" and not detect().found.get("nvenc"):
        pytest.skip("this GPU has no NVENC (a data-centre Hopper card, for one)")
    src = media / "clip.mp4"
    facts = probe(src)

    def ladder(gpu: str, out: Path) -> dict[str, Any]:
        params = {"input": str(src), "out_dir": str(out), "rungs": RUNGS, "gpu": gpu}
        return video_ladder(RecordingContext(), params, {"probe": facts})

    cpu, gpu = ladder("off", tmp_path / "cpu"), ladder(mode, tmp_path / "gpu")
    assert gpu["gpu"] == mode
    for c, g in zip(cpu["renditions"], gpu["renditions"], strict=True):
        assert (g["width"], g["height"]) == (c["width"], c["height"])
        assert g["frames"] == c["frames"]
        assert abs(g["duration"] - c["duration"]) < 0.05
