"""Stage functions the worker tests run in pool children (they must be importable)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.errors import PermanentError
from pipeline.registry import REGISTRY, batched, stage

registry = REGISTRY  # the worker CLI serves the global registry


@stage("t.echo", registry=registry)
def echo(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    return {"pid": os.getpid(), "params": params, "inputs": inputs}


@stage("t.sleep", registry=registry)
def sleep(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Sleeps, recording start and end in files so tests can see overlap."""
    marks = Path(params["marks"]) if params.get("marks") else None
    start = time.time()
    if marks:
        (marks / f"{ctx.job.name}.start").write_text(repr(start))
    steps = max(1, int(params["seconds"] / 0.05))
    for i in range(steps):
        time.sleep(params["seconds"] / steps)
        ctx.progress(100 * (i + 1) / steps, "sleeping")
    end = time.time()
    if marks:
        (marks / f"{ctx.job.name}.end").write_text(repr(end))
    return {"pid": os.getpid(), "start": start, "end": end}


@stage("t.spin", registry=registry)
def spin(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
    """CPU-bound pure Python for about ``seconds``."""
    end = time.process_time() + params["seconds"]
    n = 0
    while time.process_time() < end:
        n += 1
    return n


@stage("t.segfault", registry=registry, attempts=2)
def segfault(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
    flag = Path(params["flag"])
    if not flag.exists():
        flag.write_text("crashed once")
        ctypes.string_at(0)  # SIGSEGV in native code
    return "survived"


@stage("t.exit", registry=registry, attempts=2)
def hard_exit(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
    flag = Path(params["flag"])
    if not flag.exists():
        flag.write_text("exited once")
        os._exit(1)
    return "survived"


@stage("t.poison", registry=registry, attempts=2)
def poison(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
    os._exit(3)


@stage("t.spawn_and_hang", registry=registry, attempts=2, timeout=1.0)
def spawn_and_hang(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
    """Starts a subprocess (like ffmpeg) and hangs on the first attempt."""
    if ctx.attempt == 1:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(params["pidfile"]).write_text(str(proc.pid))
        time.sleep(600)
    return "second attempt"


@stage("t.bad_input", registry=registry, attempts=3)
def bad_input(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> None:
    raise PermanentError(f"{params['path']}: not a media file")


@stage("t.gpu_only", registry=registry, tags=("gpu",))
def gpu_only(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
    return os.getpid()


@stage("t.fan_out", registry=registry)
def fan_out(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
    sub = ctx.new_children()
    for i in range(params["n"]):
        sub.add(f"part{i}", "t.echo", {"i": i})
    return int(ctx.add_children(sub))


@stage("t.collect", registry=registry)
def collect(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
    return sorted(inputs)


@stage("t.slow_write", registry=registry, attempts=2)
def slow_write(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> str:
    """Writes an output slowly through the same atomic path the media stages use."""
    from stages.output import atomic_output

    final = Path(params["path"])
    with atomic_output(final) as tmp, open(tmp, "wb") as f:
        for _ in range(int(params.get("chunks", 40))):
            f.write(b"x" * 4096)
            f.flush()
            time.sleep(params.get("delay", 0.05))
    return str(final)


@stage("t.throttled", registry=registry, attempts=3)
def throttled(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> float:
    """Told to back off once (like an HTTP 429 with Retry-After), then succeeds."""
    from pipeline.errors import ThrottledError

    flag = Path(params["flag"])
    if not flag.exists():
        flag.write_text(repr(time.time()))
        raise ThrottledError("service said 429, retry after 1s", retry_after=1.0)
    return time.time()


@stage("t.gpu_preferred", registry=registry, prefers=("gpu",))
def gpu_preferred(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
    """Runs best on a GPU worker, fine on a CPU one."""
    time.sleep(params.get("seconds", 0.0))
    return os.getpid()


# A stage with a batch runner, as the GPU image stage has one: a worker tagged "tbatch"
# starts a lane that runs these jobs many at a time. Outcomes by params: "bad" fails that
# job alone (permanently), "decline" makes the lane run it through the stage function.
@stage("t.batchable", registry=registry, attempts=1, prefers=("tbatch",))
def batchable(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    time.sleep(params.get("sleep", 0.0))  # a slow job on the lane's one-by-one path
    return {"pid": os.getpid(), "batch": 0, "n": params.get("n")}


@batched("t.batchable", needs=("tbatch",), size=8, registry=registry)
def batchable_batch(jobs: list[Any]) -> list[Any]:
    if any(j.params.get("explode") for j in jobs):
        raise RuntimeError("the device went away")
    if any(j.params.get("hang") for j in jobs):
        time.sleep(3600)  # a device call that never returns
    out: list[Any] = []
    for j in jobs:
        if j.params.get("bad"):
            out.append(PermanentError(f"{j.params['n']}: corrupt"))
        elif j.params.get("decline"):
            out.append(None)
        else:
            out.append({"pid": os.getpid(), "batch": len(jobs), "n": j.params.get("n")})
    return out


@stage("t.tally", registry=registry)
def tally(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Appends one line per run (DAG, job, pid) to ``params["tally"]``, so a test counts
    how many times each job really ran; sleeps ``seconds`` with progress first."""
    steps = max(1, int(params.get("seconds", 0) / 0.05))
    for i in range(steps):
        time.sleep(params.get("seconds", 0) / steps)
        ctx.progress(100 * (i + 1) / steps, "counting")
    with open(params["tally"], "a") as f:
        f.write(f"{ctx.job.dag_id} {ctx.job.name} {os.getpid()}\n")
    return {"pid": os.getpid(), "inputs": sorted(inputs)}
