#!/usr/bin/env python3
"""mediapipe against its peers and against the hardware ceiling, in one command.

    python benchmarks/run.py [--quick] [--json] [--only queue,depth,latency,images,video,worker]

Starts its own redis-server (no persistence, a free port; /usr/bin/redis-server by
default) and runs every comparison one after another:

- queue: no-op jobs/s vs the Python peers, BullMQ on Node.js and the raw Redis floor
  (``queue_bench.py``, run as a subprocess with ``--json``; it starts its own server the
  same way, and installs BullMQ's node packages with ``npm ci`` when they are missing).
- worker: CPU-bound jobs through a worker node vs ``multiprocessing.Pool``
  (``worker_bench.py --json``, against this run's server).
- depth: claim + complete rate with 1k, 100k and 1M jobs waiting, and the no-op rate for
  1/2/4 processes x prefetch 1/8/32 (``depth_bench.py``).
- latency: submit -> stage running with an idle worker node, p50/p99, vs a bare Redis
  BRPOP wake-up and a bare ``Pool.apply_async`` (``latency_bench.py``).
- images: 12 MP JPEGs -> 3 widths x (WebP + JPEG) through the pipeline vs hand-written
  pyvips and Pillow pools, and the peak RSS of one 100 MP JPEG (``image_bench.py``).
- image_preset: the default image preset as users run it (probe, renditions in WebP, AVIF
  and JPEG, manifest) on 1600x1200 photos vs pyvips and Pillow pools doing the same
  renditions, and the preset as it was before issue 20 (``image_bench.run_preset_images``).
- video: the 1080p ladder through the pipeline vs the same ffmpeg run bare, and one
  decode + split vs one ffmpeg per rendition (``video_bench.py``).

Prints a markdown table (or, with ``--json``, one JSON object: for each comparison our
figure, the others' figures and the ratio ours / best other, plus every run with the load
before it); ``--save FILE`` writes that JSON object to FILE as well. Progress goes to
stderr. Test media are made once into ``--media-dir`` and reused. Plots (PNG) of the
no-op throughput go to ``--plots-dir`` (default docs/results for a full run; a temp dir
for ``--quick``) when matplotlib is installed. Exit status 0 when every comparison ran,
1 when one failed (the others still run), 2 when the server would not start.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from queue_bench import RedisServer

# Every comparison module is imported now, not when its turn comes: a file edited while a
# long run is under way must not mix two versions of the code in one run.
from benchmarks import depth_bench, image_bench, latency_bench, media_gen, plots, video_bench
from benchmarks.common import (
    HERE,
    QUIET,
    REPO,
    BenchError,
    Figure,
    conditions,
    flush,
    log,
    python_env,
    run_cmd,
)
from benchmarks.report import markdown

COMPARISONS = ("queue", "worker", "depth", "latency", "images", "image_preset", "video")
# --gpu-images DEVICE and --gpu-video MODE: the GPU cases to add to the CPU ones.
GPU: dict[str, str | None] = {"device": None, "video": None}


@dataclass(frozen=True)
class Settings:
    depths: tuple[int, ...]
    depth_window: int
    depth_reps: int
    sweep_reps: int
    sweep_window: int
    latency_samples: int
    images: int
    image_reps: int
    preset_images: int
    preset_reps: int
    clip_seconds: int
    video_reps: int
    worker_args: tuple[str, ...]
    queue_args: tuple[str, ...]
    queue_timeout: float


QUICK = Settings(
    depths=(1_000, 100_000),
    depth_window=5_000,
    depth_reps=1,
    sweep_reps=1,
    sweep_window=4_000,
    latency_samples=100,
    images=8,
    image_reps=1,
    preset_images=8,
    preset_reps=1,
    clip_seconds=6,
    video_reps=1,
    worker_args=("--jobs", "60", "--reps", "1"),
    queue_args=("--quick",),
    queue_timeout=600,
)
FULL = Settings(
    depths=(1_000, 100_000, 1_000_000),
    depth_window=5_000,
    depth_reps=3,
    sweep_reps=2,
    sweep_window=8_000,
    latency_samples=200,
    images=40,
    image_reps=4,
    preset_images=32,
    preset_reps=3,
    clip_seconds=20,
    video_reps=4,
    worker_args=("--jobs", "200", "--reps", "3"),
    queue_args=(),
    queue_timeout=3600,
)
WARMUP_IMAGES = 2  # extra images, run first on each side and not counted


# -- the comparisons -------------------------------------------------------------------
@dataclass
class Context:
    srv: RedisServer
    workdir: Path
    media: Path
    s: Settings


def _last_json(out: str) -> dict[str, Any]:
    lines = out.strip().splitlines()
    if not lines:
        raise BenchError("no output")
    try:
        return dict(json.loads(out))
    except json.JSONDecodeError:
        return dict(json.loads(lines[-1]))


def run_queue(ctx: Context) -> dict[str, Any]:
    before = conditions()
    proc = run_cmd(
        [sys.executable, str(HERE / "queue_bench.py"), "--json", *ctx.s.queue_args],
        timeout=ctx.s.queue_timeout,
        env=python_env(),
        stderr=None,
        ok_codes=(0, 1),  # 1: a repetition failed; its JSON still has the others
    )
    q = _last_json(proc.stdout)
    mp = q["mediapipe"]
    floor_name = "raw Redis floor (BRPOP, 2 consumers)"

    def peers(key: str) -> dict[str, float | None]:
        return {k: v for k, v in mp[key]["others"].items() if v}

    def bullmq_node(key: str) -> dict[str, float | None]:
        """The figure's BullMQ-on-Node.js cases alone: the reference the design names."""
        return {k: v for k, v in peers(key).items() if q["cases"][k]["lib"] == "bullmq-node"}

    figures = [
        Figure(
            "queue_process",
            "no-op jobs, 2 InlineRunner processes, 1 job per round trip, vs the peers "
            "(Python, BullMQ-node)",
            "jobs/s",
            mp["process"]["ours"],
            peers("process"),
            target=">= 1.5",
        ),
        Figure(
            "queue_process_floor",
            "the same vs the raw Redis floor",
            "jobs/s",
            mp["process"]["ours"],
            {floor_name: mp["process"]["floor"]} if mp["process"]["floor"] else {},
            target=">= 0.5",
        ),
        Figure(
            "queue_process_bullmq_node",
            "the same vs BullMQ on Node.js (2 worker processes, concurrency 1)",
            "jobs/s",
            mp["process"]["ours"],
            bullmq_node("process"),
        ),
        Figure(
            "queue_prefetch32",
            "no-op jobs, 2 InlineRunner processes, prefetch 32, vs the peers (Python, BullMQ-node)",
            "jobs/s",
            mp["process_prefetch32"]["ours"],
            peers("process_prefetch32"),
        ),
        Figure(
            "queue_prefetch32_floor",
            "the same vs the raw Redis floor",
            "jobs/s",
            mp["process_prefetch32"]["ours"],
            {floor_name: mp["process_prefetch32"]["floor"]}
            if mp["process_prefetch32"]["floor"]
            else {},
        ),
        Figure(
            "queue_enqueue_single",
            "enqueue, Client.submit (one DAG per call) vs one-at-a-time peer enqueues",
            "jobs/s",
            mp["enqueue_single"]["ours"],
            peers("enqueue_single"),
        ),
        Figure(
            "queue_enqueue_bulk",
            "enqueue, Client.submit_many vs every peer enqueue (bulk ones included: "
            "BullMQ-node and bullmq addBulk, rq enqueue_many)",
            "jobs/s",
            mp["enqueue_bulk"]["ours"],
            peers("enqueue_bulk"),
        ),
        Figure(
            "queue_enqueue_bulk_bullmq_node",
            "enqueue, Client.submit_many (1000 DAGs per call) vs BullMQ-node Queue.addBulk "
            "(1000 jobs per call)",
            "jobs/s",
            mp["enqueue_bulk"]["ours"],
            bullmq_node("enqueue_bulk"),
        ),
    ]
    errors = [e for c in q["cases"].values() for e in c.get("errors", [])]
    return {
        "figures": figures,
        "detail": {"before": before, "meta": q["meta"], "cases": q["cases"], "errors": errors},
    }


def run_worker(ctx: Context) -> dict[str, Any]:
    before = conditions()
    proc = run_cmd(
        [
            sys.executable,
            str(HERE / "worker_bench.py"),
            "--json",
            "--redis",
            ctx.srv.url,
            *ctx.s.worker_args,
        ],
        timeout=1800,
        env=python_env(),
        stderr=None,
    )
    w = _last_json(proc.stdout)
    figure = Figure(
        "worker",
        f"{w['jobs']} CPU-bound jobs of ~{w['ms_per_job']:g} ms, "
        f"mediapipe worker --concurrency {w['slots']} vs Pool({w['slots']})",
        "jobs/s",
        w["mediapipe_median"],
        {f"multiprocessing.Pool({w['slots']})": w["pool_median"]},
        target=">= 0.95",
    )
    return {"figures": [figure], "detail": {"before": before, **w}}


def run_depth(ctx: Context) -> dict[str, Any]:
    return depth_bench.run_depth(
        ctx.srv.url,
        depths=list(ctx.s.depths),
        window=ctx.s.depth_window,
        reps=ctx.s.depth_reps,
        sweep_reps=ctx.s.sweep_reps,
        sweep_window=ctx.s.sweep_window,
        redis_pid=ctx.srv.proc.pid,
    )


def run_latency(ctx: Context) -> dict[str, Any]:
    return latency_bench.run_latency(ctx.srv.url, ctx.workdir, samples=ctx.s.latency_samples)


def run_images(ctx: Context) -> dict[str, Any]:
    files = media_gen.images(ctx.media, ctx.s.images + WARMUP_IMAGES)
    big = media_gen.big_image(ctx.media)
    return image_bench.run_images(
        ctx.srv.url, ctx.workdir, files, big, reps=ctx.s.image_reps, gpu_device=GPU["device"]
    )


def run_image_preset(ctx: Context) -> dict[str, Any]:
    files = media_gen.photos1600(ctx.media, ctx.s.preset_images + WARMUP_IMAGES)
    return image_bench.run_preset_images(ctx.srv.url, ctx.workdir, files, reps=ctx.s.preset_reps)


def run_video(ctx: Context) -> dict[str, Any]:
    still = media_gen.images(ctx.media, 1)[0]
    clip = media_gen.clip(ctx.media, ctx.s.clip_seconds, still)
    return video_bench.run_video(
        ctx.srv.url, ctx.workdir, clip, reps=ctx.s.video_reps, gpu_mode=GPU["video"]
    )


RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "queue": run_queue,
    "worker": run_worker,
    "depth": run_depth,
    "latency": run_latency,
    "images": run_images,
    "image_preset": run_image_preset,
    "video": run_video,
}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _command_out(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=REPO)
        return (r.stdout.strip().splitlines() or ["unknown"])[0]
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {
        d: _version(d)
        for d in ("mediajobs", "redis", "hiredis", "pyvips", "pillow", "numpy", "matplotlib")
    }
    try:
        import pyvips

        out["libvips"] = f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
    except Exception:  # any import or library load error: just not reported
        out["libvips"] = None
    from stages.ffmpeg_run import ffmpeg_exe

    out["ffmpeg"] = _command_out([ffmpeg_exe(), "-version"])
    return out


def make_plots(results: dict[str, dict[str, Any]], folder: Path, stamp: str) -> list[str]:
    depth = results.get("depth", {})
    if "detail" not in depth:
        return []
    if not plots.available():
        log("plots skipped: matplotlib is not installed (pip install matplotlib)")
        return []
    folder.mkdir(parents=True, exist_ok=True)
    made = [
        plots.concurrency(
            depth["detail"],
            folder / "throughput-vs-concurrency.png",
            f"no-op claim+run+complete, 1,000 waiting, 2 vCPU ({stamp})",
        ),
        plots.depth(
            depth["detail"],
            folder / "throughput-vs-depth.png",
            f"no-op claim+run+complete vs queue depth, 2 vCPU ({stamp})",
        ),
    ]
    return [str(p) for p in made]


# -- main ------------------------------------------------------------------------------
def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the cleanup must not be cut short
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: under 5 minutes")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--save", type=Path, help="also write the JSON object to this file")
    ap.add_argument(
        "--report", type=Path, help="run nothing: print the table of a JSON file saved earlier"
    )
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(COMPARISONS)}")
    ap.add_argument("--redis-server", default="/usr/bin/redis-server")
    ap.add_argument(
        "--media-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "mediapipe-bench-media",
        help="where test media are made once and reused",
    )
    ap.add_argument("--plots-dir", type=Path, default=None)
    ap.add_argument(
        "--gpu-video",
        metavar="MODE",
        choices=("decode", "nvenc"),
        default=None,
        help="also run the video pipeline with the ladder on the GPU: decode (NVDEC decode "
        "and scale_cuda, x264 on the CPU; Hopper) or nvenc",
    )
    ap.add_argument(
        "--gpu-images",
        metavar="DEVICE",
        default=None,
        help="also run the images through a GPU worker's batch lane: cuda on a GPU box "
        "(the gpu extra installed), cpu to try the lane on PyTorch's CPU device",
    )
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        help="before each measurement wait up to this many seconds for fewer than 0.3 "
        "busy cores, 15 minutes in all (default 60; 0 with --quick)",
    )
    a = ap.parse_args(argv)
    only = [c.strip() for c in a.only.split(",") if c.strip()]
    unknown = [c for c in only if c not in COMPARISONS]
    if unknown:
        ap.error(f"unknown comparison(s) {', '.join(unknown)}; known: {', '.join(COMPARISONS)}")
    a.selected = [c for c in COMPARISONS if not only or c in only]
    if a.wait_quiet is None:
        a.wait_quiet = 0.0 if a.quick else 60.0
    if a.plots_dir is None:
        a.plots_dir = (
            Path(tempfile.gettempdir()) / "mediapipe-bench-plots"
            if a.quick
            else REPO / "docs" / "results"
        )
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.report:
        doc = json.loads(a.report.read_text())
        print(markdown(doc["meta"], doc["comparisons"]))
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    QUIET["max_wait"] = a.wait_quiet
    GPU["device"] = a.gpu_images
    GPU["video"] = a.gpu_video
    settings = QUICK if a.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="mediapipe-bench-"))
    a.media_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    try:
        srv = RedisServer(a.redis_server, workdir)
    except Exception as exc:
        log(f"error: {exc}")
        shutil.rmtree(workdir, ignore_errors=True)
        return 2
    log(f"{srv.version} on {srv.url}; workdir {workdir}; media {a.media_dir}")
    ctx = Context(srv, workdir, a.media_dir, settings)
    results: dict[str, dict[str, Any]] = {}
    interrupted = False
    try:
        for name in a.selected:
            log(f"== {name}")
            t0 = time.monotonic()
            try:
                res = RUNNERS[name](ctx)
            except KeyboardInterrupt:
                interrupted = True
                results[name] = {"error": "interrupted"}
                break
            except Exception as exc:  # one broken comparison must not cost the others
                res = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"{name} failed: {res['error']}")
            res["seconds"] = round(time.monotonic() - t0, 1)
            results[name] = res
            log(f"== {name}: {res['seconds']:.0f}s")
            flush(srv.r)
    finally:
        srv.stop()
    wall = time.monotonic() - t_start
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    plot_files = [] if interrupted else make_plots(results, a.plots_dir, stamp)
    for p in plot_files:
        log(f"plot: {p}")
    meta = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "quick": a.quick,
        "wall_s": round(wall, 1),
        "nproc": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_server": srv.version,
        "redis_server_path": srv.exe,
        "git": _command_out(["git", "describe", "--always", "--dirty"]),
        "versions": versions(),
        "settings": settings.__dict__,
        "wait_quiet_s": a.wait_quiet,
        "waited_for_quiet_s": round(QUIET["spent"], 1),
        "plots": plot_files,
    }
    out_results = {
        name: {
            **{k: v for k, v in res.items() if k != "figures"},
            "figures": [f.to_json() for f in res.get("figures", [])],
        }
        for name, res in results.items()
    }
    summary = {f["key"]: f for res in out_results.values() for f in res["figures"]}
    doc = {"meta": meta, "summary": summary, "comparisons": out_results}
    if a.save:
        a.save.write_text(json.dumps(doc, indent=1) + "\n")
        log(f"saved {a.save}")
    if a.json:
        print(json.dumps(doc, indent=1))
    else:
        print(markdown(meta, out_results))
    log(f"all done in {wall:.0f}s")
    if any("error" in r for r in results.values()):
        log(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if interrupted:
        return 130
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
