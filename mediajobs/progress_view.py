"""What the user watches while DAGs run: live bars on a terminal, plain lines otherwise.

The view polls Redis (DAG roll-ups and the running jobs' progress hashes) a few times a
second instead of following every event: a transcode reports many times a second, and a
redraw per event would cost more than the work it shows.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from redis.backoff import NoBackoff
from redis.retry import Retry
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from pipeline.client import TERMINAL_DAG_STATES, Client
from pipeline.connection import connect
from pipeline.outage import Outage


@dataclass
class Tracked:
    dag_id: str
    label: str
    task: TaskID | None = None
    job_states: dict[str, str] = field(default_factory=dict)
    done: bool = False


class ProgressView:
    def __init__(
        self,
        client: Client,
        dags: dict[str, str],
        *,
        stream: TextIO | None = None,
        live: bool | None = None,
        quiet: bool = False,
        outage: Outage | None = None,
    ) -> None:
        """``dags`` maps DAG id -> label (the input's file name). Without a terminal the
        view prints a line per stage change, or nothing when ``quiet`` (``--json`` output
        must leave stderr to the one-line errors). Polls ride out a Redis outage through
        ``outage`` (raising RedisGaveUpError after its give-up time)."""
        self.client = client
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.quiet = quiet and not self.live
        self.outage = outage or Outage(notice=self.notice)
        self.tracked = [Tracked(d, label) for d, label in dags.items()]
        self.console = Console(file=self.stream, force_terminal=self.live or None, highlight=False)
        self.progress = Progress(
            TextColumn("[bold]{task.fields[label]}", justify="left"),
            BarColumn(bar_width=30),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[stage]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
            refresh_per_second=8,
        )

    def __enter__(self) -> ProgressView:
        if self.live:
            self.progress.start()
            for t in self.tracked:
                t.task = self.progress.add_task(
                    "", total=100, label=t.label, stage="queued", rate=""
                )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def notice(self, line: str) -> None:
        """One line on the view's stream, above the bars when they are live."""
        if self.live:
            self.console.print(f"mediapipe: {line}", markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(f"mediapipe: {line}\n")
            self.stream.flush()

    def finished(self) -> bool:
        return all(t.done for t in self.tracked)

    def poll(self) -> None:
        for t in self.tracked:
            if not t.done:
                self._update(t)

    def run_until_done(self, interval: float = 0.15, timeout: float | None = None) -> None:
        deadline = time.monotonic() + timeout if timeout else None
        while not self.finished():
            self.outage.call(self.poll)
            if self.finished() or (deadline and time.monotonic() > deadline):
                break
            time.sleep(interval)

    def _update(self, t: Tracked) -> None:
        dag = self.client.dag(t.dag_id)
        if dag is None:
            t.done = True
            return
        jobs = self.client.jobs(t.dag_id)
        active = [j for j in jobs.values() if j["state"] == "active"]
        stage = ", ".join(sorted(j["name"] for j in active)) or dag["state"]
        rate = ""
        for j in active:
            p = j.get("progress") or {}
            bits = []
            if p.get("fps"):
                bits.append(f"{float(p['fps']):.0f} fps")
            if p.get("speed"):
                bits.append(f"{float(p['speed']):.1f}x")
            if p.get("eta"):
                bits.append(f"eta {float(p['eta']):.0f}s")
            if bits:
                rate = " ".join(bits)
        if self.live and t.task is not None:
            self.progress.update(t.task, completed=dag["percent"], stage=stage, rate=rate)
        elif not self.quiet:
            self._print_changes(t, jobs)
        if dag["state"] in TERMINAL_DAG_STATES and dag.get("finished"):
            t.done = True
            if self.live and t.task is not None:
                self.progress.update(
                    t.task,
                    completed=100 if dag["state"] == "completed" else dag["percent"],
                    stage=dag["state"],
                    rate="",
                )
            elif not self.quiet:
                self.stream.write(f"{t.label}: {dag['state']}\n")
                self.stream.flush()

    def _print_changes(self, t: Tracked, jobs: dict[str, Any]) -> None:
        for name, j in sorted(jobs.items()):
            state = j["state"]
            if t.job_states.get(name) != state and state in (
                "active",
                "completed",
                "dead",
                "upstream_failed",
            ):
                self.stream.write(f"{t.label}: {name} {state}\n")
            t.job_states[name] = state
        self.stream.flush()


def follower(url: str | None, namespace: str, outage: Outage) -> Client:
    """A client for following DAGs: not checked at connect time (its calls ride out an
    outage) and with socket timeouts, so a server that hangs instead of closing its
    connections counts as down too. redis-py retries once (a connection gone stale);
    longer outages are ``outage``'s, which says so and knows when to give up (a client
    loads the transitions into Redis, so even making one goes through it)."""
    r = connect(
        url,
        check=False,
        socket_timeout=10,
        socket_connect_timeout=5,
        retry=Retry(NoBackoff(), 1),
    )
    return outage.call(lambda: Client(r, namespace=namespace))
