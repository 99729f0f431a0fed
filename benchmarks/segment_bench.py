"""Segment-parallel transcode: one long video on k workers against one, and the cost of
cutting and joining.

Source: a 1080p30 H.264 + AAC clip (``media_gen.clip``, keyframes every 2 s). DAG:
``probe -> video_ladder`` with the default 1080p/720p/480p ladder, x264 ``veryfast``. Each
worker is a real ``mediapipe worker --concurrency 1 --no-adaptive`` pinned to one core
with ``taskset`` (its pool sizes itself from the affinity mask). Cases, interleaved, the
order reversed on odd repetitions:

- ``one_worker_whole``: one worker on core 0, the ladder as one job (``segment_above`` 0)
- ``one_worker_segments``: one worker on core 0, the ladder cut into segments
- ``two_workers_segments``: workers on cores 0 and 1, the same segments

Time is the DAG's span on Redis' clock: the probe's claim to the last job's completion.
Quality, once after the timed runs: each rung's PSNR (Y, against the source scaled to the
rung with Lanczos) for the whole and the segmented encode, and the lowest per-frame PSNR
within 3 frames of each join against the same frames of the whole encode.

    python benchmarks/segment_bench.py --seconds 60 --segment 15 --reps 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import media_gen
from benchmarks.common import dag_span, median, rep_order, worker_node

NAMESPACE = "seg"
CASES = ("one_worker_whole", "one_worker_segments", "two_workers_segments")
SEAM_FRAMES = 3


def run_case(client: Any, src: Path, out: Path, segment: float, whole: bool) -> dict[str, Any]:
    from pipeline.model import Dag

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    dag = Dag()
    dag.add("probe", "probe", {"input": str(src)})
    dag.add(
        "video_ladder",
        "video_ladder",
        {"input": str(src), "out_dir": str(out), "name": "clip", "x264_preset": "veryfast",
         "segment_above": 0 if whole else 1, "segment_seconds": segment},
        after=["probe"],
    )  # fmt: skip
    client.submit(dag)
    deadline = time.monotonic() + 3600
    while client.dag_state(dag.id) not in ("completed", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise RuntimeError("the DAG did not finish in an hour")
        time.sleep(0.5)
    if client.dag_state(dag.id) != "completed":
        errors = {n: j.get("error") for n, j in client.jobs(dag.id).items() if j.get("error")}
        raise RuntimeError(f"DAG failed: {errors}")
    ladder = client.job(dag.job_id("video_ladder"))["result"]
    return {"seconds": dag_span(client, dag.id), "segments": ladder.get("segmented", {})}


def psnr(rendition: Path, src: Path, stats: Path | None = None) -> float:
    import av

    from stages.ffmpeg_run import ffmpeg_exe

    with av.open(str(rendition)) as c:
        w, h = c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height
    graph = f"[1:v]scale={w}:{h}:flags=lanczos[ref];[0:v][ref]psnr"
    if stats is not None:
        graph += f"=stats_file={stats}"
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(rendition), "-i", str(src),
         "-lavfi", graph, "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    match = re.search(r"PSNR y:([0-9.]+)", proc.stderr)
    if not match:
        raise RuntimeError(f"no PSNR in ffmpeg's output: {proc.stderr[-300:]}")
    return float(match.group(1))


def per_frame_y(stats: Path) -> list[float]:
    values = []
    for line in stats.read_text().splitlines():
        match = re.search(r"psnr_y:([0-9.inf]+)", line)
        values.append(float(match.group(1)) if match else 0.0)
    return values


def quality(src: Path, whole: Path, segmented: Path, seams: list[int]) -> dict[str, Any]:
    rungs: dict[str, Any] = {}
    for w in sorted(whole.glob("clip_*.mp4")):
        rung = w.stem.removeprefix("clip_")
        s = segmented / w.name
        ws, ss = whole / f"{rung}.psnr", segmented / f"{rung}.psnr"
        pw, ps = psnr(w, src, ws), psnr(s, src, ss)
        fw, fs = per_frame_y(ws), per_frame_y(ss)
        near = [
            i for c in seams for i in range(c - SEAM_FRAMES, c + SEAM_FRAMES) if 0 <= i < len(fs)
        ]
        rungs[rung] = {
            "psnr_whole": round(pw, 3),
            "psnr_segmented": round(ps, 3),
            "delta_db": round(ps - pw, 3),
            "seam_min_psnr_segmented": round(min(fs[i] for i in near), 2) if near else None,
            "seam_min_psnr_whole": round(min(fw[i] for i in near), 2) if near else None,
        }
    return rungs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60, help="length of the 1080p clip")
    ap.add_argument("--segment", type=float, default=15.0, help="segment_seconds")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--media", default=str(Path(tempfile.gettempdir()) / "mediapipe-bench-media"))
    ap.add_argument("--json", help="write the figures and every run here")
    args = ap.parse_args()
    import stages  # noqa: F401  (registers the media stages for the client)
    from pipeline.client import Client
    from pipeline.registry import REGISTRY
    from pipeline.server import EmbeddedServer

    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 cores")
    media = Path(args.media)
    media.mkdir(parents=True, exist_ok=True)
    still = media_gen.images(media, 1)[0]  # a 12 MP photo, as benchmarks/run.py uses
    src = media_gen.clip(media, args.seconds, still)
    work = Path(tempfile.mkdtemp(prefix="segment-bench-"))
    env = {**os.environ, "MEDIAPIPE_HOME": str(work / "home")}
    server = EmbeddedServer(work / "home")
    server.ensure_running()
    url = server.url
    runs: list[dict[str, Any]] = []
    try:
        client = Client.connect(url, namespace=NAMESPACE, registry=REGISTRY)
        for rep in range(args.reps):
            for case in rep_order(CASES, rep):
                cores = ("0", "1") if case == "two_workers_segments" else ("0",)
                with ExitStack() as stack:
                    for i, core in enumerate(cores):
                        stack.enter_context(
                            worker_node(
                                url,
                                NAMESPACE,
                                work / f"worker{i}.log",
                                concurrency=1,
                                env=env,
                                cpus=core,
                            )
                        )
                    out = work / case
                    r = run_case(client, src, out, args.segment, case == "one_worker_whole")
                runs.append({"case": case, "rep": rep, **r})
                print(f"rep {rep} {case:<22} {r['seconds']:7.2f} s", flush=True)
        # The outputs of the last repetition's cases stay for the quality figures.
        kf_cuts: list[int] = []
        seg = next(r for r in reversed(runs) if r["case"] == "one_worker_segments")
        frames, fps = 0, 30.0
        for s in seg["segments"].get("seconds", [])[:-1]:
            frames += round(s * fps)
            kf_cuts.append(frames)
        q = quality(src, work / "one_worker_whole", work / "one_worker_segments", kf_cuts)
    finally:
        server.stop()

    def med(case: str) -> float:
        return float(median([r["seconds"] for r in runs if r["case"] == case]) or 0)

    whole, seg1, seg2 = med(CASES[0]), med(CASES[1]), med(CASES[2])
    figures = {
        "speedup_two_workers_vs_one_whole": round(whole / seg2, 3),
        "speedup_two_workers_vs_one_segmented": round(seg1 / seg2, 3),
        "segmented_vs_whole_one_worker": round(whole / seg1, 3),
        "median_seconds": {CASES[0]: whole, CASES[1]: seg1, CASES[2]: seg2},
        "quality": q,
        "source": f"{src.name}, {args.seconds} s 1080p30",
        "segment_seconds": args.segment,
        "segments": seg["segments"],
        "reps": args.reps,
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "runs": runs}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
