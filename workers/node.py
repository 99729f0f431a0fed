"""The worker node: the long-running process behind ``mediapipe worker``.

The parent process owns the Redis connection. It claims jobs while the slots in use fit
its capacity, hands each to an idle pool child, keeps every lease alive while the child
computes, publishes progress, and completes or fails the job when the child reports back.
Children run stage functions only.

Failure handling lives here:
- a child that crashes or runs past its timeout is killed with everything it started, its
  job fails as retryable, and a fresh child takes its place;
- when Redis goes away the node keeps its children running, buffers their results, and
  reconnects with backoff; leases are extended and results reported first on return;
- SIGTERM/SIGINT stop claiming, let running jobs finish within the grace period, then stop
  them and hand their jobs straight back to the queue; a second signal stops at once. An
  operator's drain or stop (pipeline/worker_control.py, read with each heartbeat) does
  the same as the first or the second signal.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.breaker import BreakerPolicy, Gate, ServiceBreakers
from pipeline.broker import Broker, LeaseStatus, new_worker_id
from pipeline.client import Client
from pipeline.connection import client_from_url, resolve_url
from pipeline.errors import ExitCode, JobTimeoutError
from pipeline.jobs import ClaimedJob, RawJSON
from pipeline.keys import Keys
from pipeline.outage import ENV_GIVE_UP, SERVICE_GIVE_UP, Outage, describe
from pipeline.registry import REGISTRY, Registry
from pipeline.retention import Pruned, Retention, prune_step
from pipeline.routing import is_routed, orphan_queues, routed_queue
from pipeline.worker_beat import WorkerBeat
from pipeline.worker_control import DRAIN, STOP, asked, forget
from workers import job_log, wire
from workers.adaptive import AdaptiveConcurrency, Limits, LoadSource, PsutilLoad, usable_cores
from workers.metrics import BREAKER_STATES, HealthServer, NodeMetrics, output_bytes
from workers.outcomes import DEFER, THROTTLE, Failure, record
from workers.pool import Child, Pool
from workers.waker import Waker

log = logging.getLogger("mediapipe.worker")

T = TypeVar("T")
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)
# A claimed job that sat in hand longer than this (s) is asked about again before it starts.
RECHECK_HELD = 0.05


# Fires due schedules until the event is set (the application's firing engine, e.g.
# mediajobs.schedule_firing.run_scheduler); a node given one runs it in a thread.
SchedulerLoop = Callable[[Client, threading.Event], None]


class WorkerCrashedError(Exception):
    """The pool child running the job died (segfault, os._exit, OOM kill)."""


@dataclass
class NodeConfig:
    queues: list[str] = field(default_factory=lambda: ["default"])
    tags: tuple[str, ...] = ()
    concurrency: int | None = None  # initial capacity in slots; None: the CPU cores
    min: int = 1
    max: int | None = None  # None: the initial capacity
    adaptive: bool = True
    adapt_interval: float = 2.0
    adapt_cooldown: float = 10.0  # seconds without growing after a shrink
    grace: float = 30.0
    lease: float = 30.0
    heartbeat: float = 2.0
    start_method: str = "forkserver"
    preload: tuple[str, ...] = ()
    namespace: str = "mp"
    stall_check: float | None = None  # default: half the lease
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy.from_env)
    metrics_port: int | None = None  # serve /metrics, /healthz, /readyz when set
    metrics_host: str = "127.0.0.1"
    gpus: str = ""  # GPU models and memory found at start, for the registry
    batch_queues: tuple[str, ...] = ()  # served by batch lanes, not by this pool
    # Finished DAGs, dead letters, old events (MEDIAPIPE_RETENTION_*); None: not here.
    retention: Retention | None = field(default_factory=Retention.from_env)


def listen_queues(queues: Iterable[str], tags: Iterable[str]) -> list[str]:
    """Every queue this node serves: for each base queue, the routed queues of every
    combination of its tags (most specific first, so a GPU box prefers GPU work), then
    the plain queue."""
    tag_list = sorted(set(tags))
    subsets: list[tuple[str, ...]] = []
    for n in range(min(len(tag_list), 4), 0, -1):
        subsets.extend(itertools.combinations(tag_list, n))
    out: list[str] = []
    for q in queues:
        out.extend(routed_queue(q, s) for s in subsets)
        out.append(q)
    return out


class WorkerNode:
    def __init__(
        self,
        url: str | None = None,
        *,
        config: NodeConfig | None = None,
        registry: Registry = REGISTRY,
        load_source: LoadSource | None = None,
        scheduler: SchedulerLoop | None = None,
    ) -> None:
        """``scheduler``: fire due schedules from this node too (each tick fires once,
        fleet-wide, however many nodes run one); None: this node fires none."""
        self.config = cfg = config or NodeConfig()
        self.scheduler = scheduler
        self.url = resolve_url(url)
        self.registry = registry
        self.keys = Keys(cfg.namespace)
        # Queues a batch lane serves (GPU image batches) are claimed by that lane alone.
        self.queues = [q for q in listen_queues(cfg.queues, cfg.tags) if q not in cfg.batch_queues]
        initial = cfg.concurrency or usable_cores()
        self.limits = Limits(
            min=max(1, cfg.min), max=max(cfg.max or initial, initial), cooldown=cfg.adapt_cooldown
        )
        self.pool: Pool | None = None
        self.adaptive = AdaptiveConcurrency(
            load_source or PsutilLoad(lambda: self.pool.pids() if self.pool else []),
            self.limits,
            initial,
        )
        # A node started while Redis is down (a fleet booting before its Redis) waits for
        # it instead of exiting: loading the transitions is the first call that needs it.
        self.outage = Outage(default_give_up=SERVICE_GIVE_UP, notice=log.warning)
        self.broker = self.outage.call(
            lambda: Broker(
                self._connect(),
                namespace=cfg.namespace,
                lease=cfg.lease,
                registry=registry,
                worker_id=new_worker_id(),
            )
        )
        # A lost reply is resent at once, briefly; past that the call stays in doubt and
        # the loop sends it again, first thing, when Redis is back (_replay).
        self.broker.scripts.resend_for = 1.0
        self.breakers = ServiceBreakers(
            self.broker.redis,
            namespace=cfg.namespace,
            policy=cfg.breaker,
            scripts=self.broker.scripts,
        )
        self.metrics = NodeMetrics()
        self.health: HealthServer | None = None
        self.held: deque[ClaimedJob] = deque()
        # When Redis last said the held jobs were still ours (monotonic): a job held
        # longer than RECHECK_HELD is asked about again before it starts, so a cancel
        # that returned while it sat in hand (prefetch, a loaded box) stops it unstarted.
        self._held_checked = 0.0
        self.outbox: list[tuple[ClaimedJob, Any]] = []
        # failures not yet recorded (Redis away): (job, failure, service it needs)
        self.failbox: list[tuple[ClaimedJob, Failure, str | None]] = []
        self.in_use = 0
        self.done = 0
        self.failed = 0
        self.stopping = False
        self.hard_stop = False
        self.gave_up = False  # Redis stayed away past the give-up time: exit code 3
        self._down_since = 0.0
        self.drain_deadline = float("inf")
        self.redis_ok = True
        self._reconnect_at = 0.0
        self._reconnect_delay = 0.1
        self._in_doubt: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = None
        self._on_replay: Callable[[Any], None] | None = None
        self._need_claim = True
        self._next_claim = 0.0
        self._timers: dict[str, float] = {}
        self._sig_r, self._sig_w = os.pipe()
        os.set_blocking(self._sig_r, False)
        os.set_blocking(self._sig_w, False)
        self.waker = Waker(self._connect, [self.keys.marker(q) for q in self.queues])

    @property
    def worker_id(self) -> str:
        return self.broker.worker_id

    @property
    def capacity(self) -> int:
        return self.adaptive.capacity

    def _connect(self) -> redis.Redis:
        # One quick retry covers a connection that went stale while idle (server
        # restarted); longer outages are the main loop's business, not redis-py's. A
        # call blocks the loop for at most a sixth of the lease (and 5 s), so the leases
        # of running jobs are renewed in time even when a reply never comes.
        timeout = max(1.0, min(5.0, self.config.lease / 6))
        return client_from_url(
            self.url,
            namespace=self.config.namespace,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )

    # -- lifecycle ----------------------------------------------------------------
    def request_stop(self) -> None:
        """What SIGTERM does (callable from tests and embedding code; thread-safe)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._sig_w, b"T")

    def _install_signals(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            self.request_stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    def run(self, *, install_signals: bool = True) -> int:
        """Run until stopped; returns the process exit code (0 after a clean drain)."""
        if install_signals:
            self._install_signals()
        self.pool = Pool(
            self.capacity, start_method=self.config.start_method, preload=self.config.preload
        )
        self.waker.start()
        # Others' expired leases are reclaimed only a lease after this node came up: it
        # may have started while Redis was away (or just before a restart), and the
        # nodes that hold those leases get that long to come back and report, as after a
        # reconnect (_try_reconnect). A crashed node's jobs wait one lease more at most.
        self._timers["stalls"] = time.monotonic() + self.config.lease
        self._scheduler_stop = threading.Event()
        if self.scheduler is not None:
            self._start_scheduler(self.scheduler)
        if self.config.metrics_port is not None:
            self.health = HealthServer(
                self.metrics,
                healthy=self._healthy,
                ready=self._ready,
                host=self.config.metrics_host,
                port=self.config.metrics_port,
            )
            self.health.start()
            log.info(
                "metrics and health on http://%s:%d/metrics",
                self.config.metrics_host,
                self.health.port,
            )
        log.info(
            "worker %s: capacity %d, queues %s, tags %s",
            self.worker_id,
            self.capacity,
            ",".join(self.queues),
            ",".join(self.config.tags) or "-",
        )
        try:
            while not self.hard_stop:
                now = time.monotonic()
                self._housekeeping(now)
                if self.hard_stop:  # asked to stop with the heartbeat
                    break
                if self.stopping and not self._busy():
                    break
                if self.stopping and now >= self.drain_deadline:
                    log.info("grace period over: stopping %d running jobs", self._running())
                    break
                if self.stopping:
                    self._flush()
                else:
                    self._fill(now)
                self._dispatch(now)
                self._wait(self._wait_timeout(now))
        finally:
            reported = self._shutdown()
        if self.gave_up:
            return ExitCode.REDIS_UNAVAILABLE
        return ExitCode.OK if reported else ExitCode.FAILED

    def _start_scheduler(self, run_scheduler: SchedulerLoop) -> None:
        def loop() -> None:
            # The client is made here, inside the retry: making one loads the transitions,
            # which needs Redis, and a node started while Redis restarts must wait for it
            # (made on the main thread, that call ended the worker with exit 3).
            client: Client | None = None
            while not self._scheduler_stop.is_set():
                try:
                    if client is None:
                        client = Client(
                            self._connect(), namespace=self.config.namespace, registry=self.registry
                        )
                    run_scheduler(client, self._scheduler_stop)
                except _REDIS_DOWN as exc:  # the node's loop says so once, in one line
                    log.debug("scheduler: Redis unreachable (%s); restarting", exc)
                    self._scheduler_stop.wait(2)
                except Exception:  # a bad schedule: keep the node up
                    log.warning("scheduler stopped; restarting", exc_info=True)
                    self._scheduler_stop.wait(5)

        threading.Thread(target=loop, daemon=True, name="scheduler").start()

    def _healthy(self) -> bool:
        try:
            return bool(self.broker.redis.ping())
        except _REDIS_DOWN:
            return False

    def _ready(self) -> bool:
        return not self.stopping and self.redis_ok and self.pool is not None

    def _busy(self) -> bool:
        return bool(self._running() or self.held or self.outbox or self.failbox)

    def _running(self) -> int:
        return sum(1 for c in self.pool.children if c.busy) if self.pool else 0

    def _shutdown(self) -> bool:
        """Stop everything; True when every result and hand-back reached Redis."""
        assert self.pool is not None
        give_back = list(self.held)
        for child in self.pool.children:
            if child.job is not None:
                give_back.append(child.job)
                child.job = None
        self.held.clear()
        self.pool.close()  # kills the trees of children still running
        self.waker.stop()
        self._scheduler_stop.set()
        if self.health is not None:
            self.health.stop()
        if self.redis_ok or self._try_reconnect(force=True):
            self._flush()
            if give_back and self._call(self.broker.release, give_back) is not None:
                log.info("handed %d jobs back to the queue", len(give_back))
                give_back = []
            self._call(self.broker.heartbeat, 0, {})
            self._call(forget, self.broker.redis, self.keys, self.worker_id)
        for fd in (self._sig_r, self._sig_w):
            os.close(fd)
        unreported = len(self.outbox) + len(self.failbox) + len(give_back)
        if unreported:
            log.error(
                "Redis unreachable at shutdown: %d results or jobs not reported; "
                "their leases will expire and other workers will run them",
                unreported,
            )
        return unreported == 0

    def _on_signal(self) -> None:
        if self.stopping:
            log.info("second signal: stopping now")
            self.hard_stop = True
            return
        self._drain()

    def _on_control(self, command: str | None) -> None:
        """An operator's request, read with the heartbeat (pipeline/worker_control.py)."""
        if command == STOP and not self.hard_stop:
            log.info("asked to stop: stopping %d running jobs now", self._running())
            self.stopping = self.hard_stop = True
        elif command == DRAIN and not self.stopping:
            log.info("asked to drain")
            self._drain()

    def _drain(self) -> None:
        """Take no new job; let the running ones finish within the grace period."""
        self.stopping = True
        self.drain_deadline = time.monotonic() + self.config.grace
        log.info(
            "stopping: finishing %d running jobs (grace %.0fs)", self._running(), self.config.grace
        )
        if self.held:
            jobs = list(self.held)
            self.held.clear()
            self._call(self.broker.release, jobs)

    # -- Redis calls that survive outages -------------------------------------------
    def _call(
        self,
        fn: Callable[..., T],
        *args: Any,
        replay: Callable[[T], None] | None = None,
        **kwargs: Any,
    ) -> T | None:
        """``fn(*args, **kwargs)``, or None while Redis is unreachable.

        A transition whose reply was lost may have run. It is sent again, unchanged,
        before any other call once Redis is back, so Redis answers it from its record of
        the first run instead of running it twice; ``replay`` then gets that reply (the
        jobs a lost claim took, the next jobs of a lost completion).
        """
        if not self.redis_ok:
            return None
        try:
            return fn(*args, **kwargs)
        except _REDIS_DOWN as exc:
            if self.broker.scripts.in_doubt:
                self._in_doubt = (fn, args, kwargs)
                self._on_replay = replay
            self.redis_ok = False
            self._down_since = time.monotonic()
            self._reconnect_at = self._down_since + self._reconnect_delay
            log.warning(
                "Redis unreachable (%s): keeping jobs running, retrying %s",
                exc,
                describe(self.outage.give_up),
            )
            return None

    def _replay(self) -> bool:
        """Send the call left in doubt again; False when Redis went away again."""
        if self._in_doubt is None:
            return True
        fn, args, kwargs = self._in_doubt
        try:
            reply = fn(*args, **kwargs)
        except _REDIS_DOWN:
            return False
        self._in_doubt = None
        if self._on_replay is not None:
            self._on_replay(reply)
        return True

    def _try_reconnect(self, *, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now < self._reconnect_at:
            return False
        try:
            self.broker.redis.ping()
        except _REDIS_DOWN:
            # Never more than a quarter lease between tries: the node must be back to
            # renew its leases well before other nodes may reclaim them (see below).
            self._reconnect_delay = min(5.0, self.config.lease / 4, self._reconnect_delay * 2)
            self._reconnect_at = now + self._reconnect_delay
            return False
        if not self._replay():
            self._reconnect_at = now + self._reconnect_delay
            return False
        log.info("Redis is back: resuming")
        self.redis_ok = True
        self._reconnect_delay = 0.1
        # Extend every lease this node holds and report its results now; reclaim others'
        # expired leases only a lease from now: their workers were cut off as long as
        # this one and get the same time to come back and renew.
        self._timers.clear()
        self._timers["stalls"] = now + self.config.lease
        self._need_claim = True
        return True

    # -- periodic work ------------------------------------------------------------
    def _due(self, name: str, every: float, now: float) -> bool:
        if now >= self._timers.get(name, 0.0):
            self._timers[name] = now + every
            return True
        return False

    def _housekeeping(self, now: float) -> None:
        if not self.redis_ok and not self._try_reconnect():
            self._check_timeouts(now)
            if now - self._down_since >= self.outage.give_up:
                log.error(
                    "Redis unreachable for %.0fs: giving up (%s=%g); stopping the running jobs",
                    now - self._down_since,
                    ENV_GIVE_UP,
                    self.outage.give_up,
                )
                self.gave_up = self.hard_stop = True
            return
        lease = self.config.lease
        if self._due("extend", max(0.05, lease / 3), now):
            self._extend_leases()
        self._check_timeouts(now)
        if self.failbox or self.outbox:
            self._flush()  # results before reclaiming anything
        if self._due("heartbeat", self.config.heartbeat, now):
            self._heartbeat()
            self._observe()
            self._reroute_orphans()
        if self._due("stalls", self.config.stall_check or lease / 2, now):
            # Every queue's expired leases, not only the queues this node serves: jobs
            # claimed from a capability or lane queue whose workers are all gone.
            self._call(self.broker.reclaim_stalled, ())
        if self.config.adaptive and self._due("adapt", self.config.adapt_interval, now):
            self._adapt()
        retention = self.config.retention
        # Jittered, so a fleet started together does not prune in step.
        if retention and self._due("prune", retention.interval * random.uniform(0.9, 1.1), now):
            self._prune(retention, now)

    def _extend_leases(self) -> None:
        assert self.pool is not None
        owned = {c.job.id: c.job.token for c in self.pool.children if c.job is not None}
        owned.update({j.id: j.token for j in self.held})
        # Finished but not yet reported: the lease is still this node's until the result
        # is in, or another node would run the job again after an outage.
        owned.update({j.id: j.token for j, _ in self.outbox})
        owned.update({f[0].id: f[0].token for f in self.failbox})
        codes = self._call(self.broker.extend, owned) if owned else {}
        if codes is not None:
            self._leases_answered(codes)

    def _recheck_held(self) -> bool:
        """Ask Redis about jobs that waited in hand; False when Redis did not answer."""
        codes = self._call(self.broker.extend, {j.id: j.token for j in self.held})
        if codes is None:
            return False
        self._leases_answered(codes)
        return True

    def _leases_answered(self, codes: dict[str, LeaseStatus]) -> None:
        """Redis's word on the leases asked about, every held job among them."""
        self._held_checked = time.monotonic()
        for job_id, code in codes.items():
            if code != LeaseStatus.OK:
                self._stop_job(job_id, cancelled=code == LeaseStatus.CANCELLED)

    def _stop_job(self, job_id: str, *, cancelled: bool) -> None:
        """Its DAG was cancelled or its lease was lost to another worker."""
        assert self.pool is not None
        for job in list(self.held):
            if job.id == job_id:
                self.held.remove(job)
                if cancelled:
                    self._fail(job, Failure.cancelled())
                return
        for child in self.pool.children:
            if child.job is not None and child.job.id == job_id:
                job = child.job
                self._free(child)
                self.pool.replace(child)
                if cancelled:
                    self._fail(job, Failure.cancelled(), started=child.started)
                else:
                    log.warning("job %s: lease lost to another worker; stopped here", job_id)
                return

    def _check_timeouts(self, now: float) -> None:
        assert self.pool is not None
        for child in list(self.pool.children):
            if child.job is not None and now > child.deadline:
                job = child.job
                self._free(child)
                self.pool.replace(child)
                msg = f"job {job.id} ran past its timeout of {job.timeout:g}s and was stopped"
                log.warning(msg)
                self._fail(job, Failure(JobTimeoutError.__name__, msg), started=child.started)

    def _observe(self) -> None:
        """Gauges that describe the present: capacity, queues, breakers."""
        self.metrics.capacity.set(self.capacity)
        self.metrics.in_use.set(self.in_use)
        pipe = self.broker.redis.pipeline(transaction=False)
        for q in self.queues:
            pipe.zcard(self.keys.wait(q))
            pipe.zcard(self.keys.active(q))
            pipe.zcard(self.keys.delayed(q))
        counts = self._call(pipe.execute)
        if counts:
            for i, q in enumerate(self.queues):
                for j, state in enumerate(("waiting", "active", "delayed")):
                    self.metrics.queue_depth.labels(q, state).set(counts[3 * i + j])
        states = self._call(self.breakers.states) or {}
        for service, b in states.items():
            self.metrics.breaker.labels(service).set(BREAKER_STATES.get(b.get("state", ""), 0))

    def _prune(self, retention: Retention, now: float) -> None:
        """One bounded retention step (any node may: the transition is atomic, and Redis
        spaces working steps fleet-wide). While more is due the next step comes after the
        gap Redis names, not a whole interval later, one step per pass of the loop."""

        def run(name: str, *args: Any) -> Any:
            return self.broker.scripts.run(name, self.keys.prefix, *args)

        try:
            done: Pruned | None = self._call(prune_step, run, retention)
        except redis.ResponseError:
            log.warning("retention step failed; trying again next interval", exc_info=True)
            return
        if done is None:
            return
        if done.dags or done.dead:
            log.debug("retention: %s", done)
        if done.more:
            self._timers["prune"] = now + max(done.retry_in, 0.005)

    def _reroute_orphans(self) -> None:
        """Jobs that preferred a capability no live worker has any more go to their
        fallback queue (any node may do it; the transition is atomic)."""
        gaps = self._call(orphan_queues, self.broker.redis, self.keys) or {}
        for queue in gaps:
            if is_routed(queue):
                moved = self._call(self.broker.reroute_orphans, queue)
                if moved:
                    log.info("rerouted %d jobs from %s: no live worker serves it", moved, queue)

    def _heartbeat(self) -> None:
        # Read first, so the beat written below already says "stopping".
        self._on_control(self._call(asked, self.broker.redis, self.keys, self.worker_id))
        r = self.adaptive.last_reading
        beat = WorkerBeat(
            tags=tuple(self.config.tags),
            gpus=self.config.gpus,
            queues=tuple(self.queues),
            capacity=self.capacity,
            in_use=self.in_use,
            jobs_done=self.done,
            jobs_failed=self.failed,
            capacity_reason=self.adaptive.reason,
            cpu_percent=str(r.cpu_percent) if r else "",
            state="stopping" if self.stopping else "running",
        )
        self._call(self.broker.heartbeat, max(10.0, 5 * self.config.heartbeat), beat.fields())

    def _adapt(self) -> None:
        assert self.pool is not None
        backlog = bool(self.held) or self._queues_have_work()
        change = self.adaptive.tick(backlog=backlog)
        if change:
            capacity, reason = change
            self.metrics.capacity_changes.labels(
                "up"
                if capacity > len(self.pool.children) or reason.startswith("backlog")
                else "down"
            ).inc()
            log.info("capacity -> %d: %s", capacity, reason)
            if capacity > len(self.pool.children):
                self.pool.resize(capacity)
            self._heartbeat()

    def _queues_have_work(self) -> bool:
        pipe = self.broker.redis.pipeline(transaction=False)
        for q in self.queues:
            pipe.zcard(self.keys.wait(q))
        counts = self._call(pipe.execute)
        return bool(counts and any(counts))

    # -- claiming and dispatching ----------------------------------------------------
    def _free_slots(self) -> int:
        return self.capacity - self.in_use

    def _fill(self, now: float) -> None:
        """Report finished jobs and claim work for the free slots, in one round trip when
        both are due (complete hands back the next jobs)."""
        if not self.redis_ok:
            return
        free = self._free_slots()
        if self.held or free <= 0:
            self._flush()
            return
        if self.outbox:
            self._flush(claim=free)
            return
        if not self._need_claim and now < self._next_claim:
            return
        reply = self._call(self.broker.claim, self.queues, free, replay=self._claimed)
        if reply is not None:
            self._claimed(reply)

    def _hold(self, jobs: list[ClaimedJob]) -> None:
        if jobs and not self.held:
            self._held_checked = time.monotonic()  # the claim's reply speaks for them
        self.held.extend(jobs)

    def _claimed(self, reply: tuple[list[ClaimedJob], float]) -> None:
        jobs, wake_in = reply
        self._hold(jobs)
        self._need_claim = bool(jobs)
        if not jobs:
            wait = min(wake_in, 1.0) if wake_in >= 0 else 1.0
            self._next_claim = time.monotonic() + wait
            self.waker.arm()

    def _dispatch(self, now: float) -> None:
        assert self.pool is not None
        while self.held:
            job = self.held[0]
            cost = max(1, min(job.cost, self.capacity))
            if self.in_use + cost > self.capacity:
                return
            child = self.pool.idle()
            if child is None:
                if len(self.pool.children) < self.capacity:
                    self.pool.resize(self.capacity)
                    continue
                return
            # Asked only when a job can start now, so one that waits long for slots
            # costs no call per loop.
            if self.redis_ok and time.monotonic() - self._held_checked > RECHECK_HELD:
                if not self._recheck_held():
                    return  # Redis is away: no verdict this time round
                continue  # the held jobs may have changed
            self.held.popleft()
            try:
                spec = self.registry.get(job.stage)
            except Exception:
                msg = f"stage {job.stage!r} is not installed on worker {self.worker_id}"
                self._fail(job, Failure("UnknownStage", msg))
                continue
            service = job.params.get("service") if isinstance(job.params, dict) else None
            probe = False
            if service:
                gate = self._service_gate(job, str(service))
                if gate is None:
                    return  # Redis is down: the job waits in hand for a verdict
                if not gate.allowed:
                    continue
                probe = gate.state == "half_open"
            ref = f"{spec.fn.__module__}:{spec.fn.__qualname__}"
            self.pool.start(child, ref, job, cost, now)
            child.extra.update(service=service, probe=probe)
            self.in_use += cost
            self.metrics.started.labels(job.stage, job.queue).inc()
            if job_log.log.isEnabledFor(logging.INFO):
                job_log.started(job, self.worker_id)

    def _service_gate(self, job: ClaimedJob, service: str) -> Gate | None:
        """Ask the fleet-wide breaker before starting a job that needs ``service``; when
        it is open (or rate-limited), defer the job instead of failing it."""
        gate = self._call(self.breakers.gate, service)
        if gate is None:  # Redis down: hold the job, no verdict
            self.held.appendleft(job)
            return None
        if not gate.allowed:
            self._defer(job, max(gate.retry_in, 0.05), f"{service} ({gate.state})")
        return gate

    def _defer(self, job: ClaimedJob, delay: float, reason: str) -> None:
        self.metrics.deferred.labels(job.stage, job.queue).inc()
        if self._call(self.broker.release, [job], delay=delay, reason=reason) is None:
            waiting = Failure("ServiceUnavailableError", f"waiting for {reason}", DEFER, wait=delay)
            self.failbox.append((job, waiting, None))
        else:
            log.info("job %s deferred %.1fs: waiting for %s", job.id, delay, reason)

    def _free(self, child: Child) -> None:
        self.in_use -= child.cost
        child.job, child.cost = None, 0
        self._need_claim = True

    def _flush(self, claim: int = 0) -> None:
        if self.failbox and self.redis_ok:
            pending, self.failbox = self.failbox, []
            for job, failure, service in pending:
                self._fail(job, failure, service)
        if not self.outbox or not self.redis_ok:
            return
        done, self.outbox = self.outbox, []
        next_from = self.queues if claim > 0 and not self.stopping else ()

        def reported(reply: tuple[list[bool], list[ClaimedJob]]) -> None:
            # also the replay of a lost completion: its results are in, drop them here
            self.outbox = [o for o in self.outbox if not any(o is d for d in done)]
            _, jobs = reply
            self._hold(jobs)
            if next_from and not jobs:
                self._need_claim = False
                self._next_claim = time.monotonic() + 1.0
                self.waker.arm()

        reply = self._call(
            self.broker.complete_many, done, next_from=next_from, count=claim, replay=reported
        )
        if reply is None:
            self.outbox = done + self.outbox  # report them when Redis is back
            return
        reported(reply)

    def _fail(
        self,
        job: ClaimedJob,
        failure: Failure,
        service: str | None = None,
        *,
        started: float | None = None,
    ) -> None:
        """Record what the failure's class decided (workers/outcomes.py), or keep it in
        the failbox until Redis is back. ``started``: when the job started here (its
        duration goes in the job's log line)."""
        if failure.action in (DEFER, THROTTLE):
            self.metrics.deferred.labels(job.stage, job.queue).inc()
        else:
            self.failed += 1
            self.metrics.failed.labels(job.stage, job.queue).inc()
        outcome = record(
            self.broker,
            job,
            failure,
            service=service,
            breakers=self.breakers,
            policy=self.config.breaker,
            call=self._call,
        )
        if outcome == "retry":
            self.metrics.retried.labels(job.stage, job.queue).inc()
        elif outcome == "dead":
            self.metrics.dead.labels(job.stage, job.queue).inc()
        if outcome is None:
            self.failbox.append((job, failure, service))
        elif job_log.log.isEnabledFor(logging.INFO):
            took = None if started is None else time.monotonic() - started
            error = f"{failure.error_type}: {failure.message}"
            job_log.ended(job, self.worker_id, outcome, took, error)

    # -- waiting for children -----------------------------------------------------
    def _wait_timeout(self, now: float) -> float:
        if self.outbox or self.failbox:
            return 0.0 if self.redis_ok else 0.1
        nearest = min([*self._timers.values(), now + 1.0])
        if not self.stopping and self._free_slots() > 0 and not self.held:
            nearest = min(nearest, self._next_claim if not self._need_claim else now)
        assert self.pool is not None
        for c in self.pool.children:
            if c.job is not None:
                nearest = min(nearest, c.deadline)
        return max(0.0, min(nearest - now, 1.0))

    def _wait(self, timeout: float) -> None:
        assert self.pool is not None
        by_conn: dict[Any, Child] = {c.conn: c for c in self.pool.children}
        sources: list[Any] = [*by_conn, self._sig_r, self.waker.read_fd]
        for ready in wait(sources, timeout):
            if ready == self._sig_r:
                self._drain_fd(self._sig_r)
                self._on_signal()
            elif ready == self.waker.read_fd:
                self.waker.drain()
                self._need_claim = True
            else:
                child = by_conn[ready]
                if child in self.pool.children:
                    self._on_child(child)

    @staticmethod
    def _drain_fd(fd: int) -> None:
        try:
            while os.read(fd, 64):
                pass
        except BlockingIOError:
            pass

    def _on_child(self, child: Child) -> None:
        conn: Connection = child.conn
        try:
            while conn.poll():
                self._on_message(child, wire.recv(conn))
        except (EOFError, OSError):
            self._on_crash(child)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            # Only plain, well-formed data is taken from a child (it decodes untrusted
            # media); anything else ends it like a crash.
            log.error("pool child %d sent a malformed message (%s)", child.pid, exc)
            self._on_crash(child)

    def _on_crash(self, child: Child) -> None:
        assert self.pool is not None
        child.process.join(1)
        code = child.process.exitcode
        job = child.job
        if job is not None:
            self._free(child)
        self.pool.replace(child)
        if job is not None:
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            msg = f"the process running job {job.id} died ({how})"
            log.warning(msg)
            self._fail(job, Failure(WorkerCrashedError.__name__, msg), started=child.started)

    def _on_message(self, child: Child, msg: list[Any]) -> None:
        kind = msg[0]
        job = child.job
        if kind == "ready":
            child.ready = True
        elif job is None or msg[1] != job.id:
            return  # a late message from a job already stopped
        elif kind == "progress":
            _, _, pct, message, fields = msg
            pct, message, fields = float(pct), str(message), dict(fields)
            if "speed" in fields:
                self.metrics.ffmpeg_speed.labels(job.stage).set(float(fields["speed"]))
            self._call(self.broker.progress, job, pct, message, **fields)
        elif kind == "check_service":
            child.conn.send(("wait", self._service_wait(child, str(msg[2]))))
        elif kind == "temp":
            Pool.note_temp(child, str(msg[2]))  # swept if the child is killed
        elif kind == "add_children":
            try:
                n = self.broker.add_children(job, wire.dag_from_wire(msg[2]))
                child.conn.send(("ok", n))
            except Exception as exc:  # includes Redis errors: the stage decides
                child.conn.send(("error", str(exc)))
        elif kind == "done":
            if not isinstance(msg[2], str):
                raise TypeError("a result must arrive as JSON text")
            service = child.extra.pop("service", None)
            took = time.monotonic() - child.started
            self.metrics.duration.labels(job.stage, job.queue).observe(took)
            self.metrics.completed.labels(job.stage, job.queue).inc()
            self.metrics.bytes_out.labels(job.stage).inc(output_bytes(msg[2]))
            self._free(child)
            self.done += 1
            if service:
                self._call(self.breakers.outcome, service, True)
            self.outbox.append((job, RawJSON(msg[2])))
            if job_log.log.isEnabledFor(logging.INFO):
                job_log.ended(job, self.worker_id, job_log.DONE, took)
        elif kind == "error":
            service = child.extra.pop("service", None)
            self._free(child)
            self._fail(job, Failure.from_json(msg[2]), service, started=child.started)

    def _service_wait(self, child: Child, service: str) -> float:
        """0 when the job may call ``service`` now; else seconds to wait. The half-open
        probe itself may go; every other job waits while the breaker is not closed."""
        reply = self._call(self.breakers.state, service)
        if reply is None:
            return 0.0  # Redis down: no verdict, the call itself will tell
        state, left = reply
        if state == "closed" or (state == "half_open" and child.extra.get("probe")):
            return 0.0
        return max(left, 0.5)
