"""Helpers shared by the comparisons of ``run.py``: figures, timeouts, worker processes.

Every comparison returns ``Figure`` objects: our number, the others' numbers, and the ratio
ours / best other (for a time or a latency, where lower is better, the ratio is still
ours / best other, so below 1 is the good side there; ``higher_is_better`` says which).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


class BenchError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ScratchServer:
    """A redis-server (or valkey-server) of a measurement's own: a free port on
    127.0.0.1, no persistence, a temporary directory; ``stop()`` ends it."""

    def __init__(self, binary: str = "/usr/bin/redis-server") -> None:
        import redis

        self.tmp = tempfile.TemporaryDirectory(prefix="bench-server-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.tmp.name,
            ],
            stdout=subprocess.DEVNULL,
        )
        self.r = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                self.r.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise SystemExit(f"{binary} did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.tmp.cleanup()


class CallgrindServer:
    """A redis-server (or valkey-server) under ``valgrind --tool=callgrind`` with
    instrumentation off until ``count`` turns it on around a piece of work: server
    instructions, a figure that does not move with this VM's noise. ``r`` is a client;
    ``stop()`` ends the server. Needs valgrind (``apt-get install valgrind``)."""

    def __init__(self, binary: str, keep: bool = False) -> None:
        import redis

        if not shutil.which("valgrind"):
            raise SystemExit("valgrind is not installed (apt-get install valgrind)")
        self.work = tempfile.mkdtemp(prefix="callgrind-server-")
        self.keep = keep
        self.port = free_port()
        self._log = open(f"{self.work}/valgrind.log", "w")  # noqa: SIM115 (open while it runs)
        self.proc = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={self.work}/cg.%p",
                binary,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.r = redis.Redis(port=self.port)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.r.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.2)

    def _control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.proc.pid)], check=True, capture_output=True
        )

    def count(self, work: Callable[[], Any]) -> tuple[int, str]:
        """Run ``work`` with instrumentation on: (the server's instructions, the profile's
        path for ``callgrind_annotate``)."""
        self.on()
        try:
            work()
        finally:
            counted = self.off()
        return counted

    def on(self) -> None:
        self._control("-i", "on")

    def off(self) -> tuple[int, str]:
        """Instrumentation off: what it counted since ``on``, as ``count`` returns it."""
        self._control("-i", "off")
        profiles = f"{self.work}/cg.{self.proc.pid}.*"
        before = set(glob.glob(profiles))
        self._control("-d")
        path = (set(glob.glob(profiles)) - before).pop()
        out = subprocess.run(["callgrind_annotate", path], capture_output=True, text=True).stdout
        m = re.search(r"^\s*([\d,]+) .*PROGRAM TOTALS", out, re.MULTILINE)
        if not m:
            raise SystemExit(f"no totals in {path}")
        return int(m.group(1).replace(",", "")), path

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.r.shutdown(nosave=True)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()
        if self.keep:
            print("kept", self.work)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def system_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) one process has used (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _steal_s() -> float:
    """CPU seconds the hypervisor gave this machine's CPUs to others (/proc/stat)."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8]) / os.sysconf("SC_CLK_TCK")


class CpuWindow:
    """Over a window: how many cores the whole machine kept busy (``cores``, steal
    included) and how many of those the hypervisor took (``steal``), and the CPU seconds one
    process (the server) used. Tells a run bound by CPU (cores busy near the machine's
    count) from one bound by waiting (round trips, wake-ups). ``workers_s``: the CPU
    seconds the workers report of themselves, set by the caller."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cores = self.steal = self.proc_s = self.workers_s = 0.0
        self._t = self._busy = self._steal = self._proc = 0.0

    def start(self) -> None:
        self._t, self._busy, self._steal = time.perf_counter(), system_busy_s(), _steal_s()
        self._proc = process_cpu_s(self.pid)

    def stop(self, end: float | None = None) -> None:
        """``end``: when the work ended (``time.perf_counter()``, one clock for every process
        here), where the caller learns of it later: the idle time since then is left out
        of ``cores`` and ``steal``."""
        wall = (time.perf_counter() if end is None else end) - self._t
        self.cores = (system_busy_s() - self._busy) / wall
        self.steal = (_steal_s() - self._steal) / wall
        self.proc_s = process_cpu_s(self.pid) - self._proc


def busy_cores(window: float = 0.5) -> float:
    """Cores kept busy over the next ``window`` seconds, by anything."""
    a = system_busy_s()
    time.sleep(window)
    return round((system_busy_s() - a) / window, 2)


# How long conditions() may wait for a quiet machine, per measurement and in all; run.py
# sets them (max_wait 0: never wait).
QUIET = {"max_wait": 0.0, "threshold": 0.3, "budget": 900.0, "spent": 0.0}


def conditions() -> dict[str, Any]:
    """Recorded before every measurement: the load averages and the cores busy just before.

    With ``QUIET["max_wait"] > 0`` it first waits, up to that many seconds (and while the
    run's waiting budget lasts), until fewer than ``QUIET["threshold"]`` cores are busy:
    other sessions' tests on a shared machine. Our own idle processes use none.
    """
    t0 = time.monotonic()
    limit = min(QUIET["max_wait"], max(0.0, QUIET["budget"] - QUIET["spent"]))
    busy = busy_cores()
    while busy >= QUIET["threshold"] and time.monotonic() - t0 < limit:
        busy = busy_cores(1.0)
    waited = time.monotonic() - t0
    QUIET["spent"] += waited
    return {"loadavg": loadavg(), "busy_cores": busy, "waited_s": round(waited, 1)}


def cond_str(c: dict[str, Any]) -> str:
    waited = f", waited {c['waited_s']:.0f}s" if c.get("waited_s", 0) >= 1 else ""
    return f"load {c['loadavg'][0]:.2f}, busy {c['busy_cores']:.2f}{waited}"


def rep_order(cases: tuple[str, ...] | list[str], rep: int) -> list[str]:
    """The cases in the order repetition ``rep`` runs them: as given on even repetitions,
    reversed on odd ones, so no case always runs first. Why: in the full run of 2026-11-24
    the video pipeline, always run first, measured 2.5-4.5 % slower than bare ffmpeg in
    all three repetitions, while the same pair run alone, in either order, came within
    0-2.4 % (rep 0) and 0-1 % (reps 1-2)."""
    return list(cases) if rep % 2 == 0 else list(cases)[::-1]


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def percentile(xs: list[float], p: float) -> float | None:
    """The p-th percentile (0..100), linear interpolation between closest ranks."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class Figure:
    """One comparison: ours against the others, with the target it has to meet."""

    key: str
    label: str
    unit: str
    ours: float | None
    others: dict[str, float | None] = field(default_factory=dict)
    higher_is_better: bool = True
    target: str = ""  # e.g. ">= 0.95" (on the ratio) or "<= 5 ms" (on ours)
    target_on: str = "ratio"  # "ratio" or "ours"
    note: str = ""

    @property
    def best_other(self) -> str | None:
        vals = {k: v for k, v in self.others.items() if v}
        if not vals:
            return None
        pick = max if self.higher_is_better else min
        return pick(vals, key=lambda k: vals[k])

    @property
    def ratio(self) -> float | None:
        best = self.best_other
        other = self.others.get(best) if best is not None else None
        if self.ours is None or not other:
            return None
        return self.ours / other

    @property
    def target_met(self) -> bool | None:
        if not self.target:
            return None
        value = self.ratio if self.target_on == "ratio" else self.ours
        if value is None:
            return None
        op, _, num = self.target.partition(" ")
        bound = float(num.split()[0])
        return value >= bound if op == ">=" else value <= bound

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(best_other=self.best_other, ratio=self.ratio, target_met=self.target_met)
        return d


# -- processes --------------------------------------------------------------------------
def run_cmd(
    cmd: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    stdout: int | IO[Any] = subprocess.PIPE,
    stderr: int | IO[Any] | None = subprocess.PIPE,
    ok_codes: tuple[int, ...] = (0,),
) -> subprocess.CompletedProcess[str]:
    """Run to completion in its own session; on timeout the whole group is killed.
    ``stderr=None`` lets the command's progress lines through to ours."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise BenchError(
            f"{Path(cmd[1] if len(cmd) > 1 else cmd[0]).name}: timed out after {timeout:.0f}s"
        ) from None
    if proc.returncode not in ok_codes:
        tail = (err or "").strip().splitlines()[-5:]
        raise BenchError(f"{' '.join(cmd[:4])}...: exit {proc.returncode}: {' | '.join(tail)}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def kill_group(proc: subprocess.Popen[Any], grace: float = 10.0) -> int | None:
    """SIGTERM the process group ``proc`` leads, then SIGKILL what is left; its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    rc = proc.poll()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    return rc


def wait_until(
    cond: Callable[[], bool],
    timeout: float,
    what: str,
    poll: float = 0.02,
    alive: Callable[[], bool] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if alive is not None and not alive():
            raise BenchError(f"{what}: the process it waits on exited")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: timed out after {timeout:.0f}s")
        time.sleep(poll)


def python_env(**extra: str) -> dict[str, str]:
    old = os.environ.get("PYTHONPATH")
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), *([old] if old else [])]),
        PYTHONUNBUFFERED="1",
        **extra,
    )


@contextlib.contextmanager
def worker_node(
    url: str,
    namespace: str,
    log_path: Path,
    *,
    concurrency: int = 2,
    imports: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
    args: tuple[str, ...] = (),
    cpus: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``mediapipe worker`` process (pool children, leases, Redis), registered and
    idle when this yields; stopped with SIGTERM (SIGKILL after a grace) at exit. ``cpus``:
    pinned to these CPUs with ``taskset -c`` (its pool sizes itself from them)."""
    from pipeline.client import Client
    from pipeline.registry import Registry

    cmd = [
        sys.executable, "-m", "mediajobs", "--redis", url, "--namespace", namespace,
        "worker", "--concurrency", str(concurrency), "--no-adaptive", "--log-level", "WARNING",
    ]  # fmt: skip
    for m in imports:
        cmd += ["--import", m]
    cmd += list(args)
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    client = Client.connect(url, namespace=namespace, registry=Registry())
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env or python_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(
                lambda: any(w.get("pid") == str(proc.pid) for w in client.workers()),
                ready_timeout,
                f"worker start (log {log_path})",
                poll=0.05,
                alive=lambda: proc.poll() is None,
            )
            yield proc
        finally:
            rc = kill_group(proc, grace=30.0)
            client.redis.close()
            if rc not in (0, None):
                log(f"worker exited with {rc}; log {log_path}")


def cpu_snapshot() -> dict[int, float]:
    """CPU seconds (user + system, reaped children included) of this process and each of
    its descendants: worker nodes, their pool children, pools, the redis-server."""
    import psutil

    me = psutil.Process()
    out: dict[int, float] = {}
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:  # exited in between: its CPU lands in its parent's children
            continue
    return out


def cpu_since(before: dict[int, float]) -> float:
    """CPU seconds the process tree used since ``before`` (a ``cpu_snapshot``).

    A process that started and was reaped in between (an ffmpeg) counts through its
    parent's reaped-children times."""
    now = cpu_snapshot()
    return round(sum(v - before.get(pid, 0.0) for pid, v in now.items()), 3)


class CpuMeter:
    """Over one measurement: the CPU our process tree used, and the CPU everything else on
    the machine used (other sessions' tests), which marks a run as noisy."""

    def __init__(self) -> None:
        self.tree = cpu_snapshot()
        self.system = system_busy_s()
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        own = cpu_since(self.tree)
        foreign = max(0.0, system_busy_s() - self.system - own)
        wall = max(1e-9, time.monotonic() - self.t0)
        return {
            "cpu_s": own,
            "foreign_cpu_s": round(foreign, 2),
            "foreign_cores": round(foreign / wall, 2),
        }


def flush(r: Any, timeout: float = 300.0) -> None:
    """Empty the benchmark server (it holds nothing else) and wait until it is done.

    ``FLUSHALL ASYNC``, then wait for the background freeing to finish: a synchronous
    FLUSHALL of a million DAGs outlasts redis-py 8's default 5 s socket timeout. Errors are
    logged, not raised, so a failed clean-up never costs the figures already measured.
    """
    import redis

    try:
        r.flushall(asynchronous=True)
        deadline = time.monotonic() + timeout
        while int(r.info("memory").get("lazyfree_pending_objects", 0)) > 0:
            if time.monotonic() > deadline:
                raise BenchError(f"Redis still freeing memory after {timeout:.0f}s")
            time.sleep(0.1)
    except (redis.RedisError, OSError, BenchError) as exc:
        log(f"FLUSHALL failed: {exc}")


def dag_span(client: Any, dag_id: str) -> float:
    """A DAG's run on Redis' clock: its first job's claim to its last job's completion."""
    jobs = client.jobs(dag_id)
    start = min(int(j["started"]) for j in jobs.values() if j.get("started"))
    end = max(int(j["finished"]) for j in jobs.values() if j.get("finished"))
    return (end - start) / 1000
