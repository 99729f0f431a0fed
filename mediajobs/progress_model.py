"""What the progress display says, computed from DAG snapshots: weighted percents that
never go backwards, explicit states, and ETAs from measured stage speeds.

Weights (docs/progress.md states the rule for users): a job's expected cost is the work
its stage does, in megapixels, from the probe's facts and the job's params. Encoding a
pixel counts 1, decoding one 0.25:

- video_ladder (transcode): frames x (0.25 x source pixels + the pixels of every rung);
  a long video's ladder runs as segments (stages/ladder_segments.py): once its segment
  jobs exist the ladder job itself is a remux (it cuts the source), each ladder_segment
  costs its own frames x the same sum, ladder_audio as audio_extract and ladder_join a
  remux of every rung
- video_sprite: frames x 0.25 x source pixels (one full decode)
- video_poster: 30 frames x 0.25 x source pixels
- audio_extract: 0.05 Mpx a second of media; hls_package (a remux): 0.02 Mpx a second
- image_renditions: 0.25 x source pixels + every rendition's pixels, once per format
- probe, manifest: 2 % each of the DAG's media work (bookkeeping)
- any other stage (run-time fan-out of a custom stage): the mean of its DAG's other jobs

Percent: completed jobs count their whole cost, a running one its cost x its percent,
jobs that will not run (cancelled, upstream failed) leave the total. The shown percent
never drops: when the computed one would (a retry or a reclaim reset a job's progress,
fan-out added jobs, the probe's facts replaced the estimate), it holds, and from then on
the rest of the bar (100 - held) is spread over the work left at that moment (see
``Monotone``). It shows 100 only once the DAG completed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.snapshot import DagSnapshot, JobSnapshot
from stages.contract import CATALOG
from stages.ladder_graph import DEFAULT_RUNGS, plan_rungs
from stages.ladder_segments import AUDIO_STAGE, JOIN_STAGE, SEGMENT_STAGE
from stages.video import segments_wanted

MPX = 1_000_000.0
DECODE = 0.25  # a decoded pixel's cost against an encoded one
POSTER_FRAMES = 30
AUDIO_PER_SECOND = 0.05  # Mpx-equivalent a second of media
REMUX_PER_SECOND = 0.02
BOOKKEEPING = 0.02  # probe and manifest: this share of the DAG's media work each
# Until the probe has run: a guess, replaced (and re-weighted) once its facts are known.
GUESS = {"width": 1920, "height": 1080, "duration": 10.0, "fps": 30.0}

FINISHED_JOB_STATES = frozenset({"completed", "dead", "upstream_failed", "cancelled"})
SKIPPED_JOB_STATES = frozenset({"upstream_failed", "cancelled"})


def _facts_value(facts: Mapping[str, Any], key: str) -> float:
    try:
        v = float(facts.get(key) or 0)
    except (TypeError, ValueError):
        v = 0.0
    return v if v > 0 and math.isfinite(v) else float(GUESS[key])


def _defaults(stage: str, params: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    if stage in CATALOG:
        merged.update(CATALOG.get(stage).defaults())
    merged.update({k: v for k, v in params.items() if v is not None})
    return merged


def media_cost(
    stage: str, params: Mapping[str, Any], facts: Mapping[str, Any], *, fanned_out: bool = False
) -> float | None:
    """A media stage's expected cost in Mpx (the module's rule); None for stages the rule
    does not know (probe, manifest and others are weighed relative to their DAG).
    ``fanned_out``: the DAG's ladder has added its segment jobs, which carry the encode."""
    w, h = _facts_value(facts, "width"), _facts_value(facts, "height")
    duration, fps = _facts_value(facts, "duration"), _facts_value(facts, "fps")
    frames, src = duration * fps, w * h / MPX
    p = _defaults(stage, params)
    if stage == "video_ladder":
        if fanned_out and segments_wanted(p, duration):
            return duration * REMUX_PER_SECOND
        rungs = plan_rungs(int(w), int(h), list(p.get("rungs") or DEFAULT_RUNGS))
        out = sum(float(r["width"]) * float(r["height"]) for r in rungs) / MPX
        return frames * (DECODE * src + out)
    if stage == SEGMENT_STAGE:
        seg = p.get("segment") or {}
        out = sum(float(r["width"]) * float(r["height"]) for r in p.get("rungs") or ()) / MPX
        return float(seg.get("frames") or 0) * (DECODE * src + out)
    if stage == AUDIO_STAGE:
        return duration * AUDIO_PER_SECOND
    if stage == JOIN_STAGE:
        return duration * REMUX_PER_SECOND * max(1, len(p.get("rungs") or ()))
    if stage == "video_sprite":
        return frames * DECODE * src
    if stage == "video_poster":
        return POSTER_FRAMES * DECODE * src
    if stage == "audio_extract":
        return duration * AUDIO_PER_SECOND
    if stage == "hls_package":
        return duration * REMUX_PER_SECOND
    if stage == "image_renditions":
        # Widths wider than the image are dropped; with none left it keeps its own.
        widths = [int(x) for x in (p.get("widths") or ()) if 0 < int(x) <= w] or [int(w)]
        formats = list(p.get("formats") or ()) or ["jpeg"]
        out = sum(x * x * (h / w) for x in widths) / MPX
        return DECODE * src + out * len(formats)
    return None


def job_costs(jobs: Mapping[str, JobSnapshot], facts: Mapping[str, Any]) -> dict[str, float]:
    """Every job's expected cost (Mpx) by name."""
    fanned_out = any(j.stage == SEGMENT_STAGE for j in jobs.values())
    known = {
        n: media_cost(j.stage, j.params, facts, fanned_out=fanned_out) for n, j in jobs.items()
    }
    media = sum(c for c in known.values() if c is not None)
    book = media * BOOKKEEPING if media > 0 else 1.0
    measured = [c for c in known.values() if c is not None]
    mean = sum(measured) / len(measured) if measured else 1.0
    out: dict[str, float] = {}
    for n, j in jobs.items():
        c = known[n]
        if c is None:
            c = book if j.stage in ("probe", "manifest") else mean
        out[n] = max(c, 1e-6)
    return out


@dataclass
class Monotone:
    """A percent that never drops: shown = held + (100 - held) x (done - done_then) /
    (total - done_then), re-anchored (held = what is shown, done_then = done) whenever
    that would fall below what is shown. Without setbacks it is 100 x done / total."""

    held: float = 0.0
    done_then: float = 0.0
    shown: float = 0.0

    def update(self, done: float, total: float) -> float:
        value = self._value(done, total)
        if value < self.shown:
            self.held, self.done_then = self.shown, done
            value = self._value(done, total)
        self.shown = max(self.shown, min(value, 99.9))
        return self.shown

    def _value(self, done: float, total: float) -> float:
        left = total - self.done_then
        if left <= 1e-12:
            return self.held if done < total else 100.0
        return self.held + (100.0 - self.held) * (done - self.done_then) / left

    def finish(self) -> float:
        self.shown = 100.0
        return self.shown


BOOKKEEPING_STAGES = frozenset({"probe", "manifest"})
BOOKKEEPING_SECONDS = 0.2  # a probe or manifest not measured yet: about this long


@dataclass
class StageSpeeds:
    """Measured speeds (Mpx a second of one job's run) by stage: from the jobs this view
    saw complete, else from the running jobs' progress so far. A media stage not measured
    yet takes ``BOOKKEEPING_SECONDS`` plus its cost at the fastest media speed measured.
    A probe or manifest takes as long as the ones measured took on average (their time
    is not in pixels), ``BOOKKEEPING_SECONDS`` before one is."""

    cost: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    live_cost: dict[str, float] = field(default_factory=dict)  # this poll's running jobs
    live_seconds: dict[str, float] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def record(self, job_id: str, stage: str, cost: float, seconds: float) -> None:
        if job_id in self.seen:
            return
        self.seen.add(job_id)
        self.jobs[stage] = self.jobs.get(stage, 0) + 1
        self.cost[stage] = self.cost.get(stage, 0.0) + cost
        self.seconds[stage] = self.seconds.get(stage, 0.0) + max(seconds, 0.001)

    def running(self, stage: str, cost_done: float, seconds: float) -> None:
        if cost_done > 0 and seconds > 0.2:
            self.live_cost[stage] = self.live_cost.get(stage, 0.0) + cost_done
            self.live_seconds[stage] = self.live_seconds.get(stage, 0.0) + seconds

    def new_poll(self) -> None:
        self.live_cost.clear()
        self.live_seconds.clear()

    def seconds_for(self, stage: str, cost: float) -> float | None:
        """How long a job of ``stage`` with ``cost`` should run; None when not known."""
        if stage in BOOKKEEPING_STAGES:  # about as long whatever the input
            n = self.jobs.get(stage, 0)
            return self.seconds[stage] / n if n else BOOKKEEPING_SECONDS
        for costs, secs in ((self.cost, self.seconds), (self.live_cost, self.live_seconds)):
            if stage in costs and costs[stage] > 0:
                return cost * secs[stage] / costs[stage]
        # Small jobs spend most of their time starting (a 64x48 image runs at a hundredth
        # of a transcode's Mpx/s), so an unmeasured stage takes the fastest speed seen.
        fastest = max(
            (
                costs[st] / secs[st]
                for costs, secs in ((self.cost, self.seconds), (self.live_cost, self.live_seconds))
                for st in costs
                if st not in BOOKKEEPING_STAGES and secs[st] > 0
            ),
            default=None,
        )
        return None if fastest is None else BOOKKEEPING_SECONDS + cost / fastest


@dataclass
class DagView:
    """One DAG as the display shows it."""

    dag_id: str
    label: str
    facts: dict[str, Any] = field(default_factory=dict)
    percent: Monotone = field(default_factory=Monotone)
    state: str = "queued — waiting for a slot"
    active: list[str] = field(default_factory=list)  # running stages, costliest first
    rate: str = ""  # fps and speed of a running transcode
    eta: float | None = None  # seconds until the whole DAG is done
    done_cost: float = 0.0
    total_cost: float = 0.0
    started: float | None = None  # monotonic time of its first claimed job
    ended: str = ""  # completed, failed, cancelled, gone
    finished: bool = False

    def update(
        self,
        snap: DagSnapshot,
        now_ms: int,
        speeds: StageSpeeds,
        served: set[str] | None,
    ) -> None:
        """``served``: the queues live workers serve (None: not known, assume served)."""
        jobs = snap.jobs
        probe = next((j for j in jobs.values() if j.stage == "probe" and j.result), None)
        if probe is not None and isinstance(probe.result, dict):
            self.facts = {**self.facts, **probe.result}
        costs = job_costs(jobs, self.facts)
        done = total = 0.0
        for n, j in jobs.items():
            c = costs[n]
            if j.state in SKIPPED_JOB_STATES:
                continue
            total += c
            if j.state == "completed":
                done += c
                if j.started_ms and j.finished_ms >= j.started_ms:
                    speeds.record(j.id, j.stage, c, (j.finished_ms - j.started_ms) / 1000)
            elif j.state == "active":
                done += c * min(max(j.percent, 0.0), 100.0) / 100
                if j.started_ms:
                    seconds = (now_ms - j.started_ms) / 1000
                    speeds.running(j.stage, c * j.percent / 100, seconds)
        self.done_cost, self.total_cost = done, total
        if snap.finished and snap.state in ("completed", "failed", "cancelled"):
            self.finished, self.ended = True, snap.state
            self.state, self.active, self.rate, self.eta = snap.state, [], "", 0.0
            if snap.state == "completed":
                self.percent.finish()
                self.done_cost = self.total_cost
            return
        self.percent.update(done, total)
        running = sorted(
            (j for j in jobs.values() if j.state == "active"), key=lambda j: -costs[j.name]
        )
        self.active = [j.stage for j in running]
        self.state = _state_text(jobs, running, now_ms, served)
        self.rate = _rate_text(running)
        self.eta = _dag_eta(jobs, costs, now_ms, speeds)

    def mark_gone(self) -> None:
        self.finished, self.ended, self.state, self.eta = True, "gone", "gone (pruned)", 0.0


def _state_text(
    jobs: Mapping[str, JobSnapshot],
    running: list[JobSnapshot],
    now_ms: int,
    served: set[str] | None,
) -> str:
    if running:
        more = f" +{len(running) - 1}" if len(running) > 1 else ""
        return f"running {running[0].stage}{more}"
    waiting = [j for j in jobs.values() if j.state == "waiting"]
    if waiting:
        if served is not None and not any(j.queue in served for j in waiting):
            return "waiting for a worker"
        return "queued — waiting for a slot"
    delayed = [j for j in jobs.values() if j.state == "delayed"]
    if delayed:
        j = min(delayed, key=lambda j: j.run_at_ms)
        wait = max(0.0, (j.run_at_ms - now_ms) / 1000)
        return f"retrying {j.stage} in {wait:.0f}s"
    return "queued — waiting for a slot"


def _rate_text(running: list[JobSnapshot]) -> str:
    for j in running:
        p = j.progress
        if not p.get("fps"):
            continue  # an audio job's speed (1500x) says nothing about the DAG
        bits = []
        try:
            if p.get("fps"):
                bits.append(f"{float(p['fps']):.0f} fps")
            if p.get("speed"):
                bits.append(f"{float(p['speed']):.1f}x")
        except ValueError:
            continue
        if bits:
            return " ".join(bits)
    return ""


def _dag_eta(
    jobs: Mapping[str, JobSnapshot],
    costs: Mapping[str, float],
    now_ms: int,
    speeds: StageSpeeds,
) -> float | None:
    """Seconds until the DAG's last job ends: each unfinished job's time left (a running
    one from its own rate, a pending one its cost at its stage's measured speed), along
    the longest chain of jobs that wait for each other. None until a speed is known."""
    left: dict[str, float] = {}
    for n, j in jobs.items():
        if j.state in FINISHED_JOB_STATES:
            continue
        t = _job_left(j, costs[n], now_ms, speeds)
        if t is None:
            return None
        left[n] = t
    chain: dict[str, float] = {}

    def finish(n: str, seen: frozenset[str]) -> float:
        if n in chain:
            return chain[n]
        before = [finish(c, seen | {n}) for c in jobs[n].children if c in left and c not in seen]
        chain[n] = left[n] + max(before, default=0.0)
        return chain[n]

    return max((finish(n, frozenset()) for n in left), default=0.0)


def _job_left(j: JobSnapshot, cost: float, now_ms: int, speeds: StageSpeeds) -> float | None:
    if j.state == "active":
        reported = j.progress.get("eta")
        if reported:
            try:
                return max(0.0, float(reported))
            except ValueError:
                pass
        elapsed = max(0.0, (now_ms - j.started_ms) / 1000) if j.started_ms else 0.0
        if j.percent >= 1 and elapsed > 0.2:
            return elapsed * (100 - j.percent) / j.percent
        expected = speeds.seconds_for(j.stage, cost)
        return None if expected is None else max(0.0, expected - elapsed)
    return speeds.seconds_for(j.stage, cost)


@dataclass
class BatchView:
    """The whole run: files done and failed, files a second, and when all will be done."""

    total: int
    started: float  # monotonic
    percent: Monotone = field(default_factory=Monotone)
    done: int = 0
    failed: int = 0
    running: int = 0
    queued: int = 0
    files_per_s: float | None = None
    eta: float | None = None
    first_done: float | None = None  # monotonic time of the first finished file
    throughput: list[tuple[float, float]] = field(default_factory=list)  # (t, done Mpx)

    def update(self, dags: Iterable[DagView], now: float) -> None:
        views = list(dags)
        self.done = sum(1 for d in views if d.finished and d.ended == "completed")
        self.failed = sum(1 for d in views if d.finished and d.ended != "completed")
        self.running = sum(1 for d in views if not d.finished and d.active)
        self.queued = sum(1 for d in views if not d.finished and not d.active)
        done_cost = sum(d.done_cost for d in views)
        total_cost = sum(d.total_cost for d in views)
        if all(d.finished for d in views):
            self.percent.finish()
            self.eta = 0.0
        else:
            self.percent.update(done_cost, total_cost)
            self.eta = self._eta(now, done_cost, total_cost)
        finished = self.done + self.failed
        if finished and self.first_done is None:
            self.first_done = now
        elapsed = now - self.started
        self.files_per_s = finished / elapsed if finished and elapsed > 0 else None

    def _eta(self, now: float, done_cost: float, total_cost: float) -> float | None:
        """Work left at the rate of the last 30 s (the whole run while it is shorter)."""
        self.throughput.append((now, done_cost))
        while len(self.throughput) > 2 and now - self.throughput[1][0] > 30:
            self.throughput.pop(0)
        t0, c0 = self.throughput[0]
        if now - t0 < 0.5 or done_cost <= c0:
            return None
        rate = (done_cost - c0) / (now - t0)
        return max(0.0, (total_cost - done_cost) / rate)


def clock(seconds: float | None) -> str:
    """1:05 / 1:02:03, or — when not known."""
    if seconds is None:
        return "—"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
