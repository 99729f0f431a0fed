#!/usr/bin/env python3
"""Queue benchmark: mediapipe vs the raw Redis floor and its peers, one run, one Redis.

No-op jobs per second. One redis-server started here (127.0.0.1 on a free port plus a
unix socket in a temp dir, no persistence) serves every case; it is shut down at the end.
Repetitions are interleaved (rep 1 of every case, then rep 2, ...) and medians reported,
like the peer harness.

- Floor and peers: the shared harness (``--peers-dir``, default ``../shared/bench/peers``
  from the repo root) is imported and its ``run_once`` runs each case, so they are measured
  exactly as its README describes. A peer whose venv (``--peer-python``, ``--arq-python``)
  or library is missing is reported as not installed. The floor cases fall back to this
  interpreter (which has redis-py and hiredis) when the peer venv is missing.
- BullMQ on Node.js (``benchmarks/bullmq_node/``, run with ``node``): the peer harness's
  bullmq-node scripts, timed the same way. ``bullmq-node-addBulk``: N jobs through
  ``Queue.addBulk`` (1000 per call), enqueue only; ``bullmq-node-process-w2``: the same
  enqueue, then 2 ``node worker.js 1`` processes (``Worker``, concurrency 1) drain the
  queue, counted in the harness's counter format. Its packages are installed with
  ``npm ci`` when ``node_modules`` is missing; without node or npm, or when the install
  fails, both cases are reported as not installed.
- mediapipe (``benchmarks/mediapipe_proc.py``, each step its own process):
  ``mediapipe-submit``: N DAGs of one no-op job through ``Client.submit``, enqueue only;
  ``mediapipe-submit_many-w2``: N through ``Client.submit_many``, then, with the queue
  full, 2 worker processes each running ``workers.inline.InlineRunner``. Each case has a
  ``-nospin`` twin run with ``MEDIAPIPE_SPIN_US=0``: replies waited for blocking, as the
  peers wait.
  Process rate = N / (last completion - first completion) over all workers, counted by
  the harness's mmap counter in the no-op stage; worker start-up is excluded.

usage: python benchmarks/queue_bench.py [--quick] [--json] [--reps 3] [--n 20000]
           [--cases a,b] [--scale 1.0] [--redis-server /usr/bin/redis-server]
           [--peers-dir DIR] [--peer-python PY] [--arq-python PY] [--node node]
           [--timeout 240]
``--cases mediapipe`` selects every mediapipe case, ``--cases bullmq-node`` both BullMQ ones.
Progress goes to stderr; stdout gets a markdown table, or with ``--json`` one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import IO, Any

import redis

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MP_PROC = HERE / "mediapipe_proc.py"

MP_SUBMIT = "mediapipe-submit"
MP_BULK = "mediapipe-submit_many-w2"
MP_PREFETCH = "mediapipe-w2-prefetch32"
MP_WORKERS = 2
# name: (enqueue mode, processed?, note, jobs each worker claims per round trip)
MP_CASES: dict[str, tuple[str, bool, str, int]] = {
    MP_SUBMIT: (
        "single",
        False,
        "Client.submit, one DAG of 1 no-op job per call (enqueue only)",
        1,
    ),
    MP_BULK: (
        "bulk",
        True,
        f"Client.submit_many (1000 DAGs per call); {MP_WORKERS} x InlineRunner process, "
        "one job per round trip",
        1,
    ),
    MP_PREFETCH: (
        "bulk",
        True,
        f"as above, {MP_WORKERS} x InlineRunner claiming up to 32 jobs per round trip "
        "(completions batched)",
        32,
    ),
}
# The same cases with MEDIAPIPE_SPIN_US=0: every reply waited for blocking, as the peers
# wait (pipeline/rawlane.py), so a run shows what the spin-wait adds beside the rest.
NOSPIN = "-nospin"
MP_CASES.update(
    {
        name + NOSPIN: (mode, process, note + "; MEDIAPIPE_SPIN_US=0 (never spins)", prefetch)
        for name, (mode, process, note, prefetch) in list(MP_CASES.items())
    }
)
# BullMQ on Node.js: package.json (pinned bullmq and ioredis), package-lock.json, and the
# harness's enqueue.js and worker.js; node_modules is made by `npm ci` on first use.
NODE_DIR = HERE / "bullmq_node"
NODE_LIB = "bullmq-node"
NODE_ENQUEUE = "bullmq-node-addBulk"
NODE_PROCESS = "bullmq-node-process-w2"
NODE_WORKERS = 2
NODE_MIN_MAJOR = 20  # ioredis 6 needs node >= 20
NODE_NPM_CI = ("ci", "--ignore-scripts", "--no-audit", "--no-fund")
# name: (processed?, worker concurrency, default N (x --scale, like the peers'), note)
NODE_CASES: dict[str, tuple[bool, int, int, str]] = {
    NODE_ENQUEUE: (
        False,
        0,
        20000,
        "BullMQ on Node.js, Queue.addBulk (1000 jobs per call), enqueue only",
    ),
    NODE_PROCESS: (
        True,
        1,
        20000,
        f"BullMQ on Node.js: addBulk, then {NODE_WORKERS} x `node worker.js 1` "
        "(one Worker a process, concurrency 1)",
    ),
}
FLOOR_CASE = "floor-brpop-2c"  # the harness's reference for every ratio
# The same floor read through mediapipe's transport, which spins for replies
# (benchmarks/floor_lane.py): the ceiling for workers that wait as ours do.
FLOOR_LANE_CASE = "floor-brpop-2c-lane"
QUICK_CASES = [
    FLOOR_CASE,
    "huey-process-w2",
    "dramatiq-p2-t8",
    NODE_ENQUEUE,
    NODE_PROCESS,
    MP_SUBMIT,
    MP_BULK,
    MP_PREFETCH,
]
QUICK_SCALE = 0.5  # floor 25000, huey 10000, bullmq-node 10000, dramatiq 5000 jobs
QUICK_N = 10000
DEFAULT_N = 20000
# Libraries whose enqueue in the harness is bulk (pipelined); Client.submit is compared
# only with the one-at-a-time enqueues, submit_many with every peer.
BULK_ENQUEUE_LIBS = frozenset({"floor", "rq", "bullmq", NODE_LIB})
# The module that proves each library is installed in its interpreter.
LIB_MODULE = {
    "floor": "redis",
    "rq": "rq",
    "celery": "celery",
    "dramatiq": "dramatiq",
    "huey": "huey",
    "arq": "arq",
    "bullmq": "bullmq",
}
STOP_GRACE_S = 15.0  # SIGTERM to SIGKILL, as in the harness
POLL_S = 0.02  # counter polling, as in the harness


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# -- Redis server ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway server; ``r``, ``url`` and ``unix_url`` are what the harness's run_once uses."""

    def __init__(self, exe: str, workdir: Path, start_timeout: float = 15.0) -> None:
        if not os.access(exe, os.X_OK):
            raise BenchError(f"redis server binary not found or not executable: {exe}")
        self.exe = exe
        self.port = free_port()
        sock = workdir / "redis.sock"
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.unix_url = f"unix://{sock}?db=0"
        self._log = open(workdir / "redis.log", "w")  # noqa: SIM115 - closed in stop()
        # A new session: Ctrl-C on the benchmark must not kill the server before the
        # cleanup that needs it (queue checks), and stop() ends it anyway.
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                *os.environ.get("BENCH_REDIS_ARGS", "").split(),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.r = redis.Redis.from_url(self.url, socket_timeout=30)
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                self.r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise BenchError(f"{exe} did not start; see {workdir / 'redis.log'}") from None
                time.sleep(0.05)
        info = self.r.info("server")
        # Valkey reports a Redis compatibility version in redis_version, its own elsewhere.
        name = str(info.get("server_name") or "redis")
        self.version = f"{name} {info.get('valkey_version') or info['redis_version']}"

    def stop(self) -> None:
        # The connection drops as the server exits, or it was already gone.
        with contextlib.suppress(redis.RedisError, OSError):
            self.r.shutdown(nosave=True)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.r.close()
        self._log.close()


# -- processes -----------------------------------------------------------------------
def stop_groups(
    procs: list[subprocess.Popen[Any]], grace: float = STOP_GRACE_S
) -> list[int | None]:
    """SIGTERM the process groups these lead, wait, then SIGKILL whatever is left of them.

    All are signalled before any is waited for, so idle workers that each take a moment to
    notice (a blocking wait for work) stop together. Returns each leader's exit code after
    SIGTERM (0: it stopped cleanly), or None where it had to be killed.
    """
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.0, deadline - time.monotonic()))
    rcs = [p.poll() for p in procs]
    for p in procs:
        with contextlib.suppress(ProcessLookupError):  # group members that outlived p
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)
    return rcs


def run_json(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a helper to completion and return the JSON object on its last stdout line."""
    try:
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:.0f}s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"rc {proc.returncode}: {tail}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def file_tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


# -- the shared peer harness ---------------------------------------------------------
@dataclass
class Peers:
    run_peers: ModuleType | None  # the harness, None when --peers-dir has none
    counter: ModuleType  # peercount (or the compatible local mmcounter)
    cases: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # case -> why it is skipped
    python: str = ""  # the floor's interpreter: the peer venv's, else this one
    arq_python: str = ""
    node: str = ""  # the node executable for the bullmq-node cases, once checked
    node_versions: dict[str, str | None] = field(default_factory=dict)


def _imports(py: str, module: str, cache: dict[tuple[str, str], str | None]) -> str | None:
    """None when ``py`` can import ``module``, else why not."""
    key = (py, module)
    if key not in cache:
        if not os.path.exists(py):
            cache[key] = f"not installed (no venv interpreter {py})"
        else:
            try:
                r = subprocess.run(
                    [py, "-c", f"import {module}"],
                    capture_output=True,
                    timeout=60,
                    stdin=subprocess.DEVNULL,
                )
                cache[key] = None if r.returncode == 0 else f"not installed ({module} in {py})"
            except subprocess.TimeoutExpired:
                cache[key] = f"not installed (import {module} timed out in {py})"
    return cache[key]


def load_peers(peers_dir: Path, peer_py: str, arq_py: str) -> Peers:
    if not (peers_dir / "run_peers.py").exists():
        sys.path.insert(0, str(HERE))
        import mmcounter

        log(f"peer harness not found in {peers_dir}: floor and peers skipped")
        return Peers(None, mmcounter)
    sys.path.insert(0, str(peers_dir))
    run_peers = importlib.import_module("run_peers")
    counter = importlib.import_module("peercount")
    cases = run_peers.build_cases(peer_py, arq_py)
    floor_py = peer_py
    if not os.path.exists(peer_py):
        # The floor needs only redis-py (+hiredis), which this interpreter has; the peers
        # keep their venv paths and are reported as not installed.
        floor_py = sys.executable
        fallback = run_peers.build_cases(floor_py, arq_py)
        cases.update({k: c for k, c in fallback.items() if c[0] == "floor"})
    lane = [sys.executable, str(HERE / "floor_lane.py")]
    cases[FLOOR_LANE_CASE] = (
        "floor",
        cases[FLOOR_CASE][1],
        sys.executable,
        [lane, lane],
        {"env": {"PYTHONPATH": os.pathsep.join([str(peers_dir), str(REPO)])}},
        "2 consumers, BRPOP per job, sent and read by mediapipe's RawLane (spins for replies)",
    )
    return Peers(run_peers, counter, cases, python=floor_py, arq_python=arq_py)


def check_installed(peers: Peers, names: list[str]) -> None:
    """Mark each selected harness case whose interpreter, library or tool is missing."""
    cache: dict[tuple[str, str], str | None] = {}
    for name in names:
        case = peers.cases.get(name)
        if case is None:
            continue
        lib, interp, cmds = case[0], case[2], case[3]
        why = _imports(interp, LIB_MODULE.get(lib, lib), cache)
        tool = cmds[0][0] if cmds and cmds[0] else ""
        if why is None and os.path.isabs(tool) and not os.path.exists(tool):
            why = f"not installed (no {tool})"
        if why:
            peers.missing[name] = why


# -- BullMQ on Node.js: install on demand ------------------------------------------------
def _pinned() -> dict[str, str]:
    """The versions package.json pins (bullmq, ioredis)."""
    deps: dict[str, str] = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    return deps


def _installed(pins: dict[str, str]) -> bool:
    """node_modules holds exactly the pinned versions."""
    for pkg, version in pins.items():
        try:
            meta = json.loads((NODE_DIR / "node_modules" / pkg / "package.json").read_text())
        except (OSError, ValueError):
            return False
        if meta.get("version") != version:
            return False
    return True


def _tail(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1]


def prepare_node(node_exe: str) -> tuple[str, dict[str, str | None], str | None]:
    """Find node, install the pinned packages if needed, and load them once.

    Returns the node path, the versions (node, bullmq, ioredis), and why the bullmq-node
    cases are skipped (None when they can run). Never raises for a missing tool or a
    failed install: the cases are then reported as not installed.
    """
    versions: dict[str, str | None] = {"node": None, "bullmq": None, "ioredis": None}
    node = shutil.which(node_exe)
    if node is None:
        return "", versions, f"not installed (node executable {node_exe!r} not found)"
    try:
        r = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
        version = versions["node"] = r.stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return node, versions, f"not installed ({node} --version failed: {exc})"
    if major < NODE_MIN_MAJOR:
        return node, versions, f"not installed (node {versions['node']}; needs >= {NODE_MIN_MAJOR})"
    try:
        pins = _pinned()
    except (OSError, ValueError, KeyError) as exc:
        return node, versions, f"not installed (no {NODE_DIR / 'package.json'}: {exc})"
    if not _installed(pins):
        # npm next to this node first (an nvm install), else whatever npm is on PATH.
        npm = shutil.which("npm", path=os.path.dirname(node)) or shutil.which("npm")
        if npm is None:
            return node, versions, "not installed (node_modules missing and no npm on PATH)"
        cmd = [npm, *NODE_NPM_CI]
        wanted = ", ".join(f"{k} {v}" for k, v in pins.items())
        log(
            f"bullmq-node: {wanted} not in {NODE_DIR / 'node_modules'}; "
            f"running `{' '.join(cmd)}` in {NODE_DIR}"
        )
        t0 = time.monotonic()
        try:
            r = subprocess.run(
                cmd,
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=600,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return node, versions, f"not installed (npm ci failed: {exc})"
        for line in (r.stdout + r.stderr).strip().splitlines()[-5:]:
            log(f"  npm: {line}")
        if r.returncode != 0:
            why = f"npm ci failed, rc {r.returncode}: {_tail(r.stderr)}"
            return node, versions, f"not installed ({why})"
        log(f"bullmq-node: npm ci done in {time.monotonic() - t0:.1f}s")
        if not _installed(pins):
            why = "npm ci left other versions than package.json pins"
            return node, versions, f"not installed ({why})"
    # Load both once, as the cases will: a broken install shows here, not as a failed rep.
    code = (
        "require('bullmq'); require('ioredis'); console.log(JSON.stringify({"
        "bullmq: require('bullmq/package.json').version, "
        "ioredis: require('ioredis/package.json').version}))"
    )
    try:
        r = subprocess.run(
            [node, "-e", code], cwd=NODE_DIR, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return node, versions, f"not installed (loading bullmq failed: {exc})"
    if r.returncode != 0:
        return node, versions, f"not installed (loading bullmq failed: {_tail(r.stderr)})"
    versions.update(json.loads(r.stdout.strip().splitlines()[-1]))
    return node, versions, None


def check_node(peers: Peers, names: list[str], node_exe: str) -> None:
    """Make the bullmq-node cases ready, or mark them skipped with the reason."""
    selected = [c for c in names if c in NODE_CASES and c not in peers.missing]
    if not selected:
        return
    peers.node, peers.node_versions, why = prepare_node(node_exe)
    if why:
        for c in selected:
            peers.missing[c] = why
    else:
        log(
            f"bullmq-node: node {peers.node_versions['node']}, bullmq "
            f"{peers.node_versions['bullmq']}, ioredis {peers.node_versions['ioredis']}"
        )


# -- mediapipe -----------------------------------------------------------------------
def mp_env(url: str, count_dir: str, peers: Peers) -> dict[str, str]:
    # The harness's dir first so the workers import its peercount; ours for mmcounter;
    # this checkout's root, so an older checkout measures its own code, not the installed one.
    paths = [str(HERE), str(REPO)]
    if peers.run_peers is not None and peers.run_peers.__file__:
        paths.insert(0, str(Path(peers.run_peers.__file__).parent))
    old = os.environ.get("PYTHONPATH")
    return dict(
        os.environ,
        PEERBENCH_REDIS_URL=url,
        PEERBENCH_COUNT_DIR=count_dir,
        PYTHONPATH=os.pathsep.join([*paths, *([old] if old else [])]),
        PYTHONUNBUFFERED="1",
    )


def wait_for_count(
    counter: ModuleType,
    count_dir: str,
    n: int,
    procs: list[subprocess.Popen[Any]],
    logs: list[Path],
    deadline: float,
    stall_s: float,
) -> str | None:
    """Poll the counters until n completions; an error message on timeout, stall or exit."""
    last_total, last_change = -1, time.monotonic()
    while True:
        done = sum(row[1] for row in counter.read_all(count_dir))
        now = time.monotonic()
        if done != last_total:
            last_total, last_change = done, now
        if done >= n:
            return None
        if now > deadline:
            return f"timed out with {done}/{n} done"
        if now - last_change > stall_s:
            return f"no progress for {stall_s:.0f}s at {done}/{n} done"
        if all(p.poll() is not None for p in procs):
            time.sleep(0.5)  # a last completion may still be landing in the counter
            done = sum(row[1] for row in counter.read_all(count_dir))
            if done >= n:
                return None
            rcs = [p.returncode for p in procs]
            return f"workers exited with {done}/{n} done (rc {rcs}): {file_tail(logs[0])}"
        time.sleep(POLL_S)


def server_cpu_s(r: Any) -> float:
    """The server process's CPU seconds so far, user and system (INFO cpu)."""
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_work(
    stats: dict[str, Any], cmdstats: dict[str, Any], done: int, cpu_s: float
) -> dict[str, float]:
    """Redis work per job over the process phase, computed as the harness does; ``cpu_s``:
    the server's CPU seconds over the phase (its idle ticks while the workers start and
    stop included, a few ms)."""
    d = max(1, done)
    scripts = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall")
    return {
        "redis_cpu_us_per_job": cpu_s * 1e6 / d,
        "script_us_per_job": sum(v["usec"] for k, v in cmdstats.items() if k in scripts) / d,
        "redis_cmds_per_job": stats["total_commands_processed"] / d,
        "redis_calls_per_job_incl_scripts": sum(v["calls"] for v in cmdstats.values()) / d,
        "script_calls_per_job": sum(v["calls"] for k, v in cmdstats.items() if k in scripts) / d,
        "cmdstats_per_job": {
            k.removeprefix("cmdstat_"): round(v["calls"] / d, 3)
            for k, v in sorted(cmdstats.items(), key=lambda kv: -kv[1]["calls"])
        },
    }


def drain(
    srv: RedisServer,
    cmds: list[list[str]],
    cwd: Path,
    env: dict[str, str],
    logs: list[Path],
    counter: ModuleType,
    count_dir: str,
    n: int,
    timeout: float,
    stall_s: float,
) -> dict[str, Any]:
    """The process phase on a full queue, as the harness runs it: CONFIG RESETSTAT, start
    the workers (one session each), count until n completions, snapshot INFO, stop them.

    Returns the run's fields: the counter's window and rate, the workers' exit codes, the
    Redis work per job, and ``error`` when the drain or the stop went wrong.
    """
    out: dict[str, Any] = {"redis_mem_after_enqueue": srv.r.info("memory")["used_memory"]}
    srv.r.config_resetstat()
    cpu0 = server_cpu_s(srv.r)
    procs: list[subprocess.Popen[Any]] = []
    handles: list[IO[str]] = []
    t_launch = time.time()
    try:
        for cmd, path in zip(cmds, logs, strict=True):
            handles.append(open(path, "w"))  # noqa: SIM115 - closed in the finally
            procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=handles[-1],
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # a session (and group) of its own, so stop_groups reaches all of it
        error = wait_for_count(
            counter, count_dir, n, procs, logs, time.monotonic() + timeout, stall_s
        )
    finally:
        t_stop = time.time()
        try:
            stats, cmdstats = srv.r.info("stats"), srv.r.info("commandstats")
            cpu_s = server_cpu_s(srv.r) - cpu0
        finally:
            out["worker_exit_codes"] = stop_groups(procs)
            for h in handles:
                h.close()
    if error:
        out["error"] = error
    elif any(rc != 0 for rc in out["worker_exit_codes"]):
        out["error"] = f"workers did not stop cleanly (rc {out['worker_exit_codes']})"

    rows = [r for r in counter.read_all(count_dir) if r[1] > 0]
    done = sum(r[1] for r in rows)
    if rows:
        first, last = min(r[2] for r in rows), max(r[3] for r in rows)
        out.update(
            done=done,
            process_s=last - first,
            process_rate=done / (last - first) if last > first else None,
            startup_s=first - t_launch,
            worker_procs=len(rows),
            per_proc_counts=sorted((r[1] for r in rows), reverse=True),
            first_job_skew_s=max(r[2] for r in rows) - first,
            detect_lag_s=t_stop - last,
        )
    out.update(redis_work(stats, cmdstats, done, cpu_s))
    return out


def enqueue_step(out: dict[str, Any], cmd: list[str], env: dict[str, str], timeout: float) -> bool:
    """Run an enqueue process (one JSON line: seconds, rate, method, waiting) into ``out``;
    False, with ``out["error"]`` set, when it failed or left other than ``out["n"]`` waiting
    (a silently dropped submission would inflate every rate)."""
    try:
        enq = run_json(cmd, env, timeout)
    except BenchError as exc:
        out["error"] = f"enqueue failed: {exc}"
        return False
    out.update(enqueue_s=enq["seconds"], enqueue_rate=enq["rate"], enqueue_method=enq["method"])
    if enq["waiting"] != out["n"]:
        out["error"] = f"enqueue left {enq['waiting']} waiting, not {out['n']}"
        return False
    return True


def run_mediapipe(
    srv: RedisServer, name: str, n: int, workdir: Path, peers: Peers, timeout: float, stall_s: float
) -> dict[str, Any]:
    mode, process, _note, prefetch = MP_CASES[name]
    out: dict[str, Any] = {"case": name, "n": n}
    count_dir = tempfile.mkdtemp(prefix="cnt-", dir=workdir)
    env = mp_env(srv.url, count_dir, peers)
    if name.endswith(NOSPIN):
        env["MEDIAPIPE_SPIN_US"] = "0"
    srv.r.flushall()
    if not enqueue_step(out, [sys.executable, str(MP_PROC), "enqueue", mode, str(n)], env, timeout):
        return out
    if not process:
        return out
    logs = [workdir / f"{name}.w{i}.log" for i in range(MP_WORKERS)]
    cmd = [sys.executable, str(MP_PROC), "worker", str(prefetch)]
    cmds = [cmd] * MP_WORKERS
    out.update(drain(srv, cmds, REPO, env, logs, peers.counter, count_dir, n, timeout, stall_s))
    try:  # nothing may be left behind: unfinished, still claimed, or dead-lettered jobs
        left = run_json([sys.executable, str(MP_PROC), "check"], env, 60)
        out["left_in_redis"] = left
        first_ms, last_ms = left["done_first_ms"], left["done_last_ms"]
        if first_ms is not None and last_ms > first_ms:
            # Completion times as Redis recorded them (ms): a check on the counter's window.
            out["process_rate_redis"] = left["dags_done"] / ((last_ms - first_ms) / 1000)
        if "error" not in out:
            if any(left[k] for k in ("waiting", "active", "dead", "dags_failed")):
                out["error"] = f"jobs left in Redis after the run: {left}"
            elif left["dags_done"] != n:
                out["error"] = f"{left['dags_done']} DAGs completed in Redis, not {n}"
    except BenchError as exc:
        out.setdefault("error", f"check failed: {exc}")
    return out


def run_bullmq_node(
    srv: RedisServer, name: str, n: int, workdir: Path, peers: Peers, timeout: float, stall_s: float
) -> dict[str, Any]:
    """One bullmq-node case, the way the peer harness's bullmq-node/bench.py runs it, but on
    this run's server: FLUSHALL, ``node enqueue.js N`` (timed addBulk), then, for the
    process case, 2 ``node worker.js 1`` drain the full queue (``drain``)."""
    process, concurrency, _n, _note = NODE_CASES[name]
    out: dict[str, Any] = {"case": name, "n": n}
    count_dir = tempfile.mkdtemp(prefix="cnt-", dir=workdir)
    env = dict(os.environ, PEERBENCH_REDIS_URL=srv.url, PEERBENCH_COUNT_DIR=count_dir)
    srv.r.flushall()
    if not enqueue_step(out, [peers.node, str(NODE_DIR / "enqueue.js"), str(n)], env, timeout):
        return out
    if not process:
        return out
    logs = [workdir / f"{name}.w{i}.log" for i in range(NODE_WORKERS)]
    cmd = [peers.node, str(NODE_DIR / "worker.js"), str(concurrency)]
    cmds = [cmd] * NODE_WORKERS
    out.update(drain(srv, cmds, NODE_DIR, env, logs, peers.counter, count_dir, n, timeout, stall_s))
    # Nothing may be left behind, and Redis's own completion times (finishedOn, ms) are a
    # check on the counter's window, as for mediapipe.
    r, key = srv.r, "bull:peerq:"
    left = {
        "wait": r.llen(key + "wait"),
        "active": r.llen(key + "active"),
        "delayed": r.zcard(key + "delayed"),
        "prioritized": r.zcard(key + "prioritized"),
        "failed": r.zcard(key + "failed"),
        "completed": r.zcard(key + "completed"),
    }
    out["left_in_redis"] = left
    if left["completed"]:
        f0 = float(r.zrange(key + "completed", 0, 0, withscores=True)[0][1])
        f1 = float(r.zrange(key + "completed", -1, -1, withscores=True)[0][1])
        out["finishedOn_first_ms"], out["finishedOn_last_ms"] = f0, f1
        if f1 > f0:
            out["process_rate_redis"] = left["completed"] / ((f1 - f0) / 1000)
    if "error" not in out:
        if any(left[k] for k in ("wait", "active", "delayed", "prioritized", "failed")):
            out["error"] = f"jobs left in Redis after the run: {left}"
        elif left["completed"] != n:
            out["error"] = f"{left['completed']} jobs completed in Redis, not {n}"
    return out


# -- summary -------------------------------------------------------------------------
def med(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def summarize(
    name: str, lib: str, note: str, runs: list[dict[str, Any]], missing: str | None
) -> dict[str, Any]:
    if missing:
        return {"lib": lib, "note": note, "status": missing}
    ok = [r for r in runs if "error" not in r]
    return {
        "lib": lib,
        "note": note,
        "status": "ok" if len(ok) == len(runs) else f"{len(runs) - len(ok)} rep(s) failed",
        "n": runs[0]["n"] if runs else None,
        "ok_reps": len(ok),
        "errors": [r["error"] for r in runs if "error" in r],
        "enqueue_method": runs[0].get("enqueue_method") if runs else None,
        "enqueue_rate_median": med([r.get("enqueue_rate") for r in runs]),
        "enqueue_rate_all": [round(r["enqueue_rate"]) for r in runs if r.get("enqueue_rate")],
        "process_rate_median": med([r.get("process_rate") for r in ok]),
        "process_rate_all": [round(r["process_rate"]) for r in ok if r.get("process_rate")],
        "process_rate_redis_median": med([r.get("process_rate_redis") for r in ok]),
        "startup_s_median": med([r.get("startup_s") for r in ok]),
        "redis_cmds_per_job_median": med([r.get("redis_cmds_per_job") for r in ok]),
        "script_calls_per_job_median": med([r.get("script_calls_per_job") for r in ok]),
        "redis_cpu_us_per_job_median": med([r.get("redis_cpu_us_per_job") for r in ok]),
        "script_us_per_job_median": med([r.get("script_us_per_job") for r in ok]),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def figure(ours: float | None, others: dict[str, float], floor: float | None) -> dict[str, Any]:
    best = max(others, key=lambda k: others[k]) if others else None
    return {
        "ours": ours,
        "others": others,
        "best_peer": best,
        "best_peer_rate": others[best] if best else None,
        "ours_vs_best_peer": _ratio(ours, others[best] if best else None),
        "floor": floor,
        "ours_vs_floor": _ratio(ours, floor),
    }


def compare(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each mediapipe figure against every peer measured and the floor-brpop-2c case."""
    floor = summary.get(FLOOR_CASE, {})
    peers = {
        k: s
        for k, s in summary.items()
        if s["lib"] not in ("floor", "mediapipe") and s.get("ok_reps")
    }

    def rates(key: str, only_single: bool = False) -> dict[str, float]:
        return {
            k: s[key]
            for k, s in peers.items()
            if s.get(key) and not (only_single and s["lib"] in BULK_ENQUEUE_LIBS)
        }

    single = summary.get(MP_SUBMIT, {})
    bulk = summary.get(MP_BULK, {})
    pre = summary.get(MP_PREFETCH, {})
    single_ns = summary.get(MP_SUBMIT + NOSPIN, {})
    lane_floor = summary.get(FLOOR_LANE_CASE, {})
    bulk_ns = summary.get(MP_BULK + NOSPIN, {})
    return {
        "enqueue_single": figure(
            single.get("enqueue_rate_median"),
            rates("enqueue_rate_median", only_single=True),
            floor.get("enqueue_rate_median"),
        ),
        "enqueue_bulk": figure(
            bulk.get("enqueue_rate_median"),
            rates("enqueue_rate_median"),
            floor.get("enqueue_rate_median"),
        ),
        "process": figure(
            bulk.get("process_rate_median"),
            rates("process_rate_median"),
            floor.get("process_rate_median"),
        ),
        # The same runs timed by Redis's own completion records: a check, since the peers'
        # figures are counter-timed only.
        "process_redis_side": figure(
            bulk.get("process_rate_redis_median"),
            rates("process_rate_median"),
            floor.get("process_rate_median"),
        ),
        "process_prefetch32": figure(
            pre.get("process_rate_median"),
            rates("process_rate_median"),
            floor.get("process_rate_median"),
        ),
        "process_prefetch32_redis_side": figure(
            pre.get("process_rate_redis_median"),
            rates("process_rate_median"),
            floor.get("process_rate_median"),
        ),
        "enqueue_single_nospin": figure(
            single_ns.get("enqueue_rate_median"),
            rates("enqueue_rate_median", only_single=True),
            floor.get("enqueue_rate_median"),
        ),
        "process_nospin": figure(
            bulk_ns.get("process_rate_median"),
            rates("process_rate_median"),
            floor.get("process_rate_median"),
        ),
        # against the floor that waits for replies as ours do (its "floor" is that one)
        "process_vs_lane_floor": figure(
            bulk.get("process_rate_median"), {}, lane_floor.get("process_rate_median")
        ),
    }


def _f(v: float | None, fmt: str) -> str:
    return fmt % v if v is not None else "-"


def markdown(
    meta: dict[str, Any], summary: dict[str, dict[str, Any]], comparison: dict[str, dict[str, Any]]
) -> str:
    floor = summary.get(FLOOR_CASE, {})
    out = [
        f"Queue benchmark, {meta['date_utc']}: {meta['redis_server']}, {meta['reps']} rep(s) "
        f"interleaved, medians; nproc {meta['nproc']}; mediajobs {meta['mediajobs']} "
        f"({meta['git']}).",
        "",
        "| case | N | enqueue jobs/s | process jobs/s | all reps (process) | process / floor "
        "| enqueue / floor LPUSH | Redis cmds/job | script calls/job | Redis CPU us/job "
        "| script us/job | status | setup |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, s in summary.items():
        if s["status"].startswith("not installed"):
            out.append(
                f"| {name} | - | - | - | - | - | - | - | - | - | - | {s['status']} | {s['note']} |"
            )
            continue
        out.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                name,
                s["n"],
                _f(s["enqueue_rate_median"], "%.0f"),
                _f(s["process_rate_median"], "%.0f"),
                ", ".join(str(x) for x in s["process_rate_all"]) or "-",
                _f(_ratio(s["process_rate_median"], floor.get("process_rate_median")), "%.3f"),
                _f(_ratio(s["enqueue_rate_median"], floor.get("enqueue_rate_median")), "%.3f"),
                _f(s["redis_cmds_per_job_median"], "%.2f"),
                _f(s["script_calls_per_job_median"], "%.2f"),
                _f(s["redis_cpu_us_per_job_median"], "%.1f"),
                _f(s["script_us_per_job_median"], "%.1f"),
                s["status"],
                s["note"],
            )
        )
    labels = {
        "enqueue_single": "enqueue, Client.submit (vs one-at-a-time peer enqueues)",
        "enqueue_bulk": "enqueue, Client.submit_many (vs every peer enqueue)",
        "process": f"process, {MP_WORKERS} InlineRunner processes, 1 job per round trip",
        "process_redis_side": "process, same runs timed by Redis (dags:done first..last)",
        "process_prefetch32": f"process, {MP_WORKERS} InlineRunner processes, prefetch 32",
        "process_prefetch32_redis_side": "process, prefetch 32, timed by Redis",
        "enqueue_single_nospin": "enqueue, Client.submit, MEDIAPIPE_SPIN_US=0",
        "process_nospin": "process, 1 job per round trip, MEDIAPIPE_SPIN_US=0",
        "process_vs_lane_floor": f"process, 1 job per round trip; floor: {FLOOR_LANE_CASE}",
    }
    out += [
        "",
        "| mediapipe | ours jobs/s | best peer | best peer jobs/s | ours / best peer "
        "| floor jobs/s | ours / floor |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for key, c in comparison.items():
        out.append(
            "| {} | {} | {} | {} | {} | {} | {} |".format(
                labels[key],
                _f(c["ours"], "%.0f"),
                c["best_peer"] or "-",
                _f(c["best_peer_rate"], "%.0f"),
                _f(c["ours_vs_best_peer"], "%.3f"),
                _f(c["floor"], "%.0f"),
                _f(c["ours_vs_floor"], "%.3f"),
            )
        )
    errors = [f"- {k}: {e}" for k, s in summary.items() for e in s.get("errors", [])]
    if errors:
        out += ["", "Errors:", *errors]
    return "\n".join(out)


# -- main ----------------------------------------------------------------------------
def _git_describe() -> str:
    try:
        r = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return r.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind through the finally blocks: they stop the workers and the server. Only once:
    # a second SIGTERM must not cut that cleanup short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"1 rep, N x{QUICK_SCALE} for peers and {QUICK_N} for mediapipe, "
        f"cases {','.join(QUICK_CASES)}",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    ap.add_argument(
        "--n", type=int, default=None, help=f"mediapipe's N (default {DEFAULT_N}; quick {QUICK_N})"
    )
    ap.add_argument(
        "--scale",
        type=float,
        default=None,
        help=f"multiply the peers' N (default 1; quick {QUICK_SCALE})",
    )
    ap.add_argument(
        "--cases",
        default="",
        help=f"comma-separated; 'mediapipe' = every one of ours, '{NODE_LIB}' = both BullMQ ones",
    )
    ap.add_argument("--redis-server", default="/usr/bin/redis-server")
    ap.add_argument("--peers-dir", type=Path, default=REPO.parent / "shared" / "bench" / "peers")
    ap.add_argument("--peer-python", default="/tmp/peerbench/bin/python")
    ap.add_argument("--arq-python", default="/tmp/peerbench-arq/bin/python")
    ap.add_argument(
        "--node",
        default="node",
        help="node executable for the bullmq-node cases (packages installed with npm ci "
        f"into {NODE_DIR.relative_to(REPO)}/node_modules when missing)",
    )
    ap.add_argument("--timeout", type=float, default=240.0, help="per phase, seconds")
    ap.add_argument(
        "--stall",
        type=float,
        default=30.0,
        help="mediapipe: fail a run when no job completes for this many seconds",
    )
    a = ap.parse_args(argv)
    a.reps = a.reps if a.reps is not None else (1 if a.quick else 3)
    a.n = a.n if a.n is not None else (QUICK_N if a.quick else DEFAULT_N)
    a.scale = a.scale if a.scale is not None else (QUICK_SCALE if a.quick else 1.0)
    if a.reps < 1 or a.n < 1 or a.scale <= 0:
        ap.error("--reps, --n and --scale must be positive")
    return a


def select_cases(a: argparse.Namespace, peers: Peers) -> list[str]:
    known = [*peers.cases, *NODE_CASES, *MP_CASES]
    groups = {"mediapipe": list(MP_CASES), NODE_LIB: list(NODE_CASES)}
    if a.cases:
        names: list[str] = []
        for c in a.cases.split(","):
            names += groups.get(c, [c] if c else [])
    else:
        names = QUICK_CASES if a.quick else known
    # Without the harness its case names are unknown here; report them rather than fail.
    unknown = [c for c in names if c not in known and peers.run_peers is not None]
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for c in names:
        if c not in known:
            peers.missing[c] = "not installed (peer harness not found)"
    return list(dict.fromkeys(names))


def run_all(
    a: argparse.Namespace, srv: RedisServer, peers: Peers, names: list[str], workdir: Path
) -> list[dict[str, Any]]:
    """Every case, repetitions interleaved: one noisy moment hits one rep of each case."""
    runs: list[dict[str, Any]] = []
    for rep in range(a.reps):
        for name in names:
            if name in peers.missing:
                continue
            t0 = time.monotonic()
            try:
                if name in MP_CASES:
                    r = run_mediapipe(srv, name, a.n, workdir, peers, a.timeout, a.stall)
                elif name in NODE_CASES:
                    n = max(100, int(NODE_CASES[name][2] * a.scale))
                    r = run_bullmq_node(srv, name, n, workdir, peers, a.timeout, a.stall)
                else:
                    assert peers.run_peers is not None
                    case = peers.cases[name]
                    n = max(100, int(case[1] * a.scale))
                    r = peers.run_peers.run_once(srv, name, case, n, str(workdir), a.timeout)
            except Exception as exc:  # one broken case must not cost the others' figures
                r = {"case": name, "n": 0, "error": f"{type(exc).__name__}: {exc}"}
            r["rep"] = rep
            runs.append(r)
            log(
                "rep {} {:<26} n={:<6} enq {:>8}/s  proc {:>8}/s  {}  ({:.1f}s)".format(
                    rep,
                    name,
                    r["n"],
                    _f(r.get("enqueue_rate"), "%.0f"),
                    _f(r.get("process_rate"), "%.0f"),
                    r.get("error", ""),
                    time.monotonic() - t0,
                )
            )
    return runs


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    peers = load_peers(a.peers_dir.resolve(), a.peer_python, a.arq_python)
    names = select_cases(a, peers)
    check_installed(peers, names)
    check_node(peers, names, a.node)
    for c, why in peers.missing.items():
        if c in names:
            log(f"skip {c}: {why}")

    workdir = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    try:
        srv = RedisServer(a.redis_server, workdir)
    except BenchError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        log(f"error: {exc}")
        return 2
    log(f"{srv.version} ({srv.exe}) on {srv.url}; workdir {workdir}")
    t_all = time.monotonic()
    try:
        runs = run_all(a, srv, peers, names, workdir)
    except KeyboardInterrupt:
        # The cases' own finally blocks have stopped their workers; the server stops below.
        log(f"interrupted; logs kept in {workdir}")
        return 130
    finally:
        srv.stop()
    log(f"all cases: {time.monotonic() - t_all:.0f}s")

    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in MP_CASES:
            lib, note = "mediapipe", MP_CASES[name][2]
        elif name in NODE_CASES:
            lib, note = NODE_LIB, NODE_CASES[name][3]
        elif name in peers.cases:
            lib, note = peers.cases[name][0], peers.cases[name][5]
        else:
            lib, note = "?", ""
        summary[name] = summarize(
            name, lib, note, [r for r in runs if r["case"] == name], peers.missing.get(name)
        )
    comparison = compare(summary)
    meta = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_server": srv.version,
        "redis_server_path": srv.exe,
        "reps": a.reps,
        "mediapipe_n": a.n,
        "peer_scale": a.scale,
        "mediajobs": _version("mediajobs"),
        "redis_py": _version("redis"),
        "git": _git_describe(),
        "peers_dir": str(a.peers_dir.resolve()) if peers.run_peers else None,
        "floor_python": peers.python or None,
        "arq_python": peers.arq_python or None,
        "bullmq_node": peers.node_versions or None,
    }
    if peers.run_peers is not None and os.path.exists(a.peer_python):
        meta["peer_versions"] = peers.run_peers.lib_versions(
            a.peer_python, ["redis", "hiredis", "rq", "celery", "dramatiq", "huey", "bullmq"]
        )
    failed = any("error" in r for r in runs)
    if failed:
        log(f"kept worker logs in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if a.json:
        out = {"meta": meta, "mediapipe": comparison, "cases": summary, "runs": runs}
        print(json.dumps(out, indent=1))
    else:
        print(markdown(meta, summary, comparison))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
