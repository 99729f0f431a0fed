"""Inputs without a shared disk: the cost of fetching the input from object storage.

A 1080p30 ladder (1080p/720p/480p, x264 ``veryfast``) of a ``--seconds`` clip
(``media_gen.clip``) through one real ``mediapipe worker`` (the machine's cores), its
outputs in a local folder, the input either

- ``local``: a path the worker reads (``mediapipe submit /path/clip.mp4``), or
- ``s3``: an object in S3 (moto's server on this machine):
  ``mediapipe submit s3://bench/in/clip.mp4`` (the probe runs on the worker, which
  fetches the object into its node-local cache once and verifies it).

Time is the DAG's span on Redis' clock (first claim to last completion), interleaved
repetitions, medians; the node's input cache is emptied before each S3 run (a cold
fetch every time), and each run's job timeline is kept (the fetch is the ``locate``
job). Then staging: a ``--big-mb`` file staged twice with ``--stage``
(the second finds it there: no upload), timed.

    python benchmarks/remote_input_bench.py --seconds 20 --reps 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import media_gen
from benchmarks.common import dag_span, median, rep_order, worker_node

NAMESPACE = "remote"
CREDS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
PRESET = 'kind = "video"\n[video_ladder]\nx264_preset = "veryfast"\nsegment_above = 0\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def submit(url: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-m", "mediajobs", "--redis", url, "--namespace", NAMESPACE, "submit",
         *args, "--wait", "--json"],
        env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"submit failed: {res.stderr[-500:]}")
    return dict(json.loads(res.stdout))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--big-mb", type=int, default=200)
    ap.add_argument("--media", default=str(Path(tempfile.gettempdir()) / "mediapipe-bench-media"))
    ap.add_argument("--json")
    args = ap.parse_args()
    import boto3

    from pipeline.client import Client
    from pipeline.registry import REGISTRY
    from pipeline.server import EmbeddedServer

    os.environ.update(CREDS)  # the staging part runs in this process
    media = Path(args.media)
    media.mkdir(parents=True, exist_ok=True)
    src = media_gen.clip(media, args.seconds, media_gen.images(media, 1)[0])
    work = Path(tempfile.mkdtemp(prefix="remote-bench-"))
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        **CREDS,
        "AWS_ENDPOINT_URL": endpoint,
        "MEDIAPIPE_HOME": str(work / "home"),
        "MEDIAPIPE_INPUT_CACHE": str(work / "cache"),
    }
    server = EmbeddedServer(work / "home")
    server.ensure_running()
    runs: list[dict[str, Any]] = []
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        s3.create_bucket(Bucket="bench")
        s3.upload_file(str(src), "bench", "in/clip.mp4")
        preset = work / "ladder.toml"
        preset.write_text(PRESET)
        client = Client.connect(server.url, namespace=NAMESPACE, registry=REGISTRY)
        with worker_node(server.url, NAMESPACE, work / "worker.log", concurrency=2, env=env):
            for rep in range(args.reps):
                for case in rep_order(("local", "s3"), rep):
                    out = work / f"out-{case}-{rep}"
                    where = str(src) if case == "local" else "s3://bench/in/clip.mp4"
                    for cached in (work / "cache").glob("*"):  # every S3 run fetches cold
                        shutil.rmtree(cached) if cached.is_dir() else cached.unlink()
                    doc = submit(server.url, env, where, "--out", str(out), "--preset", str(preset))
                    seconds = dag_span(client, doc["dag_id"])
                    jobs = client.jobs(doc["dag_id"])
                    t0 = min(int(j["started"]) for j in jobs.values() if j.get("started"))
                    timeline = {  # each job's claim and completion, seconds after the first
                        name.rsplit(":", 1)[-1]: [
                            round((int(j["started"]) - t0) / 1000, 2),
                            round((int(j["finished"]) - t0) / 1000, 2),
                        ]
                        for name, j in jobs.items()
                        if j.get("started") and j.get("finished")
                    }
                    runs.append({"case": case, "rep": rep, "seconds": seconds, "jobs": timeline})
                    print(f"rep {rep} {case:<6} {seconds:7.2f} s", flush=True)
                    shutil.rmtree(out, ignore_errors=True)
            big = work / "big.bin.mp4"
            with open(big, "wb") as f:
                f.write(os.urandom(args.big_mb << 20))
            staging = []
            for attempt in (1, 2):
                from mediajobs.staging import Stage, stage_input
                from stages.output import sha256_of

                t0 = time.perf_counter()
                digest = sha256_of(big)
                _, uploaded = stage_input(big, digest, Stage.parse("s3://bench/staging", endpoint))
                staging.append({"attempt": attempt, "uploaded": uploaded,
                                "seconds": round(time.perf_counter() - t0, 2)})  # fmt: skip
                print(f"staging {args.big_mb} MB, try {attempt}: {staging[-1]}", flush=True)
    finally:
        server.stop()
        moto.terminate()

    def med(case: str) -> float:
        return float(median([r["seconds"] for r in runs if r["case"] == case]) or 0)

    local, remote = med("local"), med("s3")
    figures = {
        "median_seconds": {"local": local, "s3": remote},
        "s3_vs_local": round(remote / local, 3),
        "fetch_overhead_percent": round(100 * (remote - local) / local, 1),
        "staging": staging,
        "clip": f"{args.seconds} s 1080p30, {src.stat().st_size} bytes",
        "reps": args.reps,
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "runs": runs}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
