"""Video: the rendition ladder through the pipeline vs the same ffmpeg run bare, and the
single-decode split graph vs one ffmpeg per rendition.

Source: a 1080p30 H.264 + AAC clip (``media_gen.clip``). Ladder: the stage's default rungs,
1080p / 720p / 480p, x264 ``veryfast``, AAC 128k, keyframes every 2 s.

- pipeline: a DAG ``probe -> video_ladder`` run by one ``mediapipe worker --concurrency 2
  --no-adaptive`` process; timed from the ladder job's claim to its completion (Redis'
  clock), so it includes the stage's own work around ffmpeg (progress parsing and
  reports, reading back and hashing the outputs).
- bare: the exact command ``stages.video.ladder_command`` builds, run with ``subprocess``.
- per rendition: ``ladder_command`` with one rung each (the same encoder options), three
  ffmpeg processes run one after another, and two at a time.
- the same split-vs-sequence pair for the 2-rung ladder (720p + 480p) the anchors measured.

CPU seconds of the whole process tree (worker node, pool children, ffmpeg, Redis) are
recorded for every run too: unlike the rates they hardly move when other sessions load the
machine.

Rates are source frames per second. Repetitions are interleaved, the cases in reverse
order on odd repetitions (``common.rep_order``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    BenchError,
    CpuMeter,
    Figure,
    cond_str,
    conditions,
    flush,
    kill_group,
    log,
    median,
    rep_order,
    wait_until,
    worker_node,
)

NAMESPACE = "vid"
PRESET = "veryfast"
TARGET_PIPELINE = 0.97
TARGET_SPLIT = 1.4
CASES = (
    "pipeline",
    "bare_split",
    "per_rendition_seq",
    "per_rendition_par2",
    "bare_split_2rung",
    "per_rendition_seq_2rung",
)


def _frames(path: Path) -> tuple[int, int, int, bool]:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = v.frames or sum(1 for p in c.demux(v) if p.size)
        return frames, v.codec_context.width, v.codec_context.height, bool(c.streams.audio)


def _run(cmd: list[str], timeout: float) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc, grace=2)
        raise BenchError(f"ffmpeg timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise BenchError(f"ffmpeg exit {proc.returncode}: {err.decode(errors='replace')[-400:]}")
    return time.perf_counter() - t0


def _check_outputs(paths: list[Path]) -> None:
    for p in paths:
        if not p.exists() or p.stat().st_size < 1000:
            raise BenchError(f"missing or empty output {p}")


def run_video(
    url: str,
    workdir: Path,
    src: Path,
    *,
    reps: int,
    timeout: float = 600,
    gpu_mode: str | None = None,
) -> dict[str, Any]:
    """``gpu_mode`` ("decode" or "nvenc", see stages.video.gpu_mode) adds the same DAG with
    the ladder on the GPU ("pipeline_gpu"), against the CPU pipeline of the same run."""
    import stages  # noqa: F401  (registers probe and video_ladder for the client)
    from pipeline.client import Client
    from pipeline.model import Dag
    from pipeline.registry import REGISTRY
    from stages.ladder_graph import DEFAULT_RUNGS, ladder_command, plan_rungs

    frames, width, height, has_audio = _frames(src)
    rungs = plan_rungs(width, height, DEFAULT_RUNGS)
    small = rungs[1:]  # 720p + 480p: the anchors' ladder, for comparison with their 1.46x
    out = workdir / "video-out"

    def outputs(tag: str, rs: list[dict[str, Any]]) -> list[Path]:
        return [out / f"{tag}_{r['name']}.mp4" for r in rs]

    def cmd(tag: str, rs: list[dict[str, Any]]) -> list[str]:
        return ladder_command(
            str(src), rs, [str(p) for p in outputs(tag, rs)], has_audio=has_audio, preset=PRESET
        )

    client = Client.connect(url, namespace=NAMESPACE, registry=REGISTRY)
    flush(client.redis)
    runs: list[dict[str, Any]] = []
    cases = (*CASES, "pipeline_gpu") if gpu_mode else CASES
    gpu_error = None
    try:
        with worker_node(url, NAMESPACE, workdir / "video-worker.log") as proc:
            for rep in range(reps):
                for position, case in enumerate(rep_order(cases, rep)):
                    if case == "pipeline_gpu" and gpu_error:
                        continue
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir(parents=True)
                    before = conditions()
                    meter = CpuMeter()
                    extra: dict[str, Any] = {}
                    if case in ("pipeline", "pipeline_gpu"):
                        gpu = (gpu_mode or "off") if case == "pipeline_gpu" else "off"
                        dag = Dag()
                        dag.add("probe", "probe", {"input": str(src)})
                        dag.add(
                            "ladder",
                            "video_ladder",
                            {"input": str(src), "out_dir": str(out), "name": "pipe",
                             "x264_preset": PRESET, "gpu": gpu},
                            after=["probe"],
                        )  # fmt: skip
                        t0 = time.perf_counter()
                        client.submit(dag)
                        dag_id = dag.id

                        def finished(dag_id: str = dag_id) -> bool:
                            return client.dag_state(dag_id) in ("completed", "failed")

                        # Timed on Redis' clock (the ladder job's claim to completion):
                        # a slower poll costs nothing in accuracy and leaves ffmpeg the CPU.
                        wait_until(
                            finished,
                            timeout,
                            "video DAG",
                            poll=0.5,
                            alive=lambda: proc.poll() is None,
                        )
                        dag_s = time.perf_counter() - t0
                        job = client.job(dag.job_id("ladder")) or {}
                        if client.dag_state(dag.id) != "completed":
                            if case == "pipeline_gpu":  # keep the CPU figures of this run
                                gpu_error = f"GPU ladder ({gpu}) failed: {job.get('error')}"
                                log(gpu_error)
                                continue
                            raise BenchError(f"video DAG failed: {job.get('error')}")
                        seconds = (int(job["finished"]) - int(job["started"])) / 1000
                        extra = {
                            "dag_seconds": dag_s,
                            "stage_seconds": job["result"]["stage_info"]["seconds"],
                            "renditions": len(job["result"]["renditions"]),
                        }
                        _check_outputs(outputs("pipe", rungs))
                    elif case == "bare_split":
                        seconds = _run(cmd("bare", rungs), timeout)
                        _check_outputs(outputs("bare", rungs))
                    elif case == "per_rendition_seq":
                        seconds = sum(_run(cmd("seq", [r]), timeout) for r in rungs)
                        _check_outputs(outputs("seq", rungs))
                    elif case == "bare_split_2rung":
                        seconds = _run(cmd("bare2", small), timeout)
                        _check_outputs(outputs("bare2", small))
                    elif case == "per_rendition_seq_2rung":
                        seconds = sum(_run(cmd("seq2", [r]), timeout) for r in small)
                        _check_outputs(outputs("seq2", small))
                    else:
                        t0 = time.perf_counter()
                        with ThreadPoolExecutor(2) as ex:
                            list(ex.map(lambda r: _run(cmd("par", [r]), timeout), rungs))
                        seconds = time.perf_counter() - t0
                        _check_outputs(outputs("par", rungs))
                    used = meter.stop()
                    r = {"case": case, "rep": rep, "position": position, "seconds": seconds,
                         "fps": frames / seconds, **used, "before": before, **extra}  # fmt: skip
                    runs.append(r)
                    log(
                        f"video rep {rep} {case:<20} {seconds:6.2f}s  {r['fps']:6.1f} fps "
                        f"cpu {used['cpu_s']:5.1f}s "
                        f"({cond_str(before)}; others used {used['foreign_cores']:.2f} cores)"
                    )
    finally:
        shutil.rmtree(out, ignore_errors=True)
        flush(client.redis)
        client.redis.close()

    def fps(case: str) -> float | None:
        return median([r["fps"] for r in runs if r["case"] == case])

    def cpu(case: str) -> float | None:
        return median([r["cpu_s"] for r in runs if r["case"] == case])

    label = f"{len(rungs)}-rung ladder ({'/'.join(r['name'] for r in rungs)}, x264 {PRESET})"
    figures = [
        Figure(
            "video_pipeline",
            f"{label} through the pipeline vs the same ffmpeg command run bare",
            "source fps",
            fps("pipeline"),
            {"bare ffmpeg, same command": fps("bare_split")},
            target=f">= {TARGET_PIPELINE}",
        ),
        Figure(
            "video_pipeline_cpu",
            "the same runs, CPU seconds (pipeline: probe job, worker and Redis included)",
            "CPU s",
            cpu("pipeline"),
            {"bare ffmpeg, same command": cpu("bare_split")},
            higher_is_better=False,
            note="insensitive to other processes' load, unlike the rates",
        ),
        Figure(
            "video_split",
            f"{label}: one decode + split vs one ffmpeg per rendition in sequence",
            "source fps",
            fps("bare_split"),
            {"one ffmpeg per rendition, in sequence": fps("per_rendition_seq")},
            target=f">= {TARGET_SPLIT}",
        ),
        Figure(
            "video_split_cpu",
            "the same runs, CPU seconds: one decode + split vs one ffmpeg per rendition",
            "CPU s",
            cpu("bare_split"),
            {"one ffmpeg per rendition": cpu("per_rendition_seq")},
            higher_is_better=False,
            note="insensitive to other processes' load, unlike the rates",
        ),
        Figure(
            "video_split_2rung",
            "2-rung ladder (720p/480p, the anchors' ladder): one decode + split vs one ffmpeg "
            "per rendition in sequence",
            "source fps",
            fps("bare_split_2rung"),
            {"one ffmpeg per rendition, in sequence": fps("per_rendition_seq_2rung")},
            note="the anchors measured 1.46x for this ladder (60 s clip, 2026-11-23)",
        ),
        Figure(
            "video_split_vs_par2",
            f"{label}: one decode + split vs one ffmpeg per rendition, 2 at a time",
            "source fps",
            fps("bare_split"),
            {"one ffmpeg per rendition, 2 at a time": fps("per_rendition_par2")},
        ),
    ]
    if gpu_mode and not gpu_error:
        figures.append(
            Figure(
                "video_gpu",
                f"{label} through the pipeline, GPU ({gpu_mode}: NVDEC decode + scale_cuda) "
                "vs CPU only",
                "source fps",
                fps("pipeline_gpu"),
                {"the same pipeline on the CPU": fps("pipeline")},
            )
        )
    return {
        "figures": figures,
        "detail": {
            "gpu_error": gpu_error,
            "source": str(src),
            "frames": frames,
            "size": f"{width}x{height}",
            "rungs": [f"{r['width']}x{r['height']} crf {r['crf']}" for r in rungs],
            "preset": PRESET,
            "reps": reps,
            "fps_median": {c: fps(c) for c in cases},
            "cpu_s_median": {
                c: median([r["cpu_s"] for r in runs if r["case"] == c]) for c in cases
            },
            "runs": runs,
        },
    }
