"""What the user watches while DAGs run: live bars on a terminal, plain lines otherwise.

The view polls Redis (every followed DAG's jobs and progress, in two pipelined round
trips: ``pipeline.snapshot``) a few times a second instead of following every event: a
transcode reports many times a second, and a redraw per event would cost more than the
work it shows. What it says (weighted percents that never drop, states, ETAs) comes from
``mediajobs.progress_model``.

Layout: one row per DAG while they all fit in the terminal (with a batch row above them
when there are several). With more, the batch row (files done/total, failed, percent,
files/s, ETA) and only the DAGs that are running; finished files are counted there, and
listed by the summary at the end. Each row drops its low-priority columns (elapsed time,
rate, bar, ETA) as the terminal narrows, instead of squeezing every column into ``6…``.
Without a terminal: a line per state change per file, or with many files a batch line at
most every few seconds and a line per failed file.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from redis.backoff import NoBackoff
from redis.retry import Retry
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from mediajobs.progress_model import BatchView, DagView, StageSpeeds, clock
from pipeline.client import Client
from pipeline.connection import connect
from pipeline.outage import Outage
from pipeline.routing import live_queues
from pipeline.snapshot import read_dags

PLAIN_FILES = 10  # without a terminal, up to this many files get a line per state change
PLAIN_BATCH_EVERY = 3.0  # seconds between batch lines without a terminal
BAR_MAX = 40


@dataclass
class Cell:
    """One column of a row: its text (or a bar when ``bar``), the order in which columns
    are dropped as the terminal narrows (higher goes first), and its narrowest form."""

    text: str
    drop: int = 0  # 0: never dropped
    min_width: int = 0  # shrinkable down to this (0: fixed at its text's width)
    bar: float | None = None  # a bar at this percent instead of text
    style: str = ""


def layout(cells: list[Cell], width: int) -> Text:
    """The cells on one line of at most ``width`` columns: low-priority cells dropped
    until the rest fit at their narrowest, then the room left given to the bar and to the
    shrunk cells (the label first)."""
    kept = list(cells)

    def narrowest(c: Cell) -> int:
        if c.bar is not None:
            return c.min_width
        return c.min_width or len(c.text)

    while len(kept) > 1 and sum(narrowest(c) for c in kept) + len(kept) - 1 > width:
        droppable = [c for c in kept if c.drop]
        if not droppable:
            break
        kept.remove(max(droppable, key=lambda c: c.drop))
    widths = [narrowest(c) for c in kept]
    room = width - sum(widths) - (len(kept) - 1)
    for i, c in enumerate(kept):  # shrunk text cells first, back to their full text
        if c.bar is None and c.min_width and room > 0:
            grow = min(room, len(c.text) - widths[i])
            widths[i] += max(grow, 0)
            room -= max(grow, 0)
    for i, c in enumerate(kept):
        if c.bar is not None and room > 0:
            grow = min(room, BAR_MAX - widths[i])
            widths[i] += max(grow, 0)
            room -= max(grow, 0)
    line = Text(no_wrap=True, overflow="crop")
    for i, (c, w) in enumerate(zip(kept, widths, strict=True)):
        if i:
            line.append(" ")
        if c.bar is not None:
            filled = round(w * max(0.0, min(c.bar, 100.0)) / 100)
            line.append("━" * filled, style="green" if c.bar >= 100 else "magenta")
            line.append("━" * (w - filled), style="grey23")
        else:
            line.append(_fit(c.text, w), style=c.style)
    return line


def _fit(text: str, width: int) -> str:
    """``text`` in ``width`` columns: padded, or cut in the middle (a file name keeps its
    start and its extension) when longer."""
    if len(text) <= width:
        return text.ljust(width)
    if width <= 1:
        return text[:width]
    head = (width - 1) // 2 + (width - 1) % 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def dag_cells(d: DagView, label_width: int, now: float) -> list[Cell]:
    elapsed = clock(now - d.started) if d.started is not None else ""
    state_style = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(d.ended, "")
    return [
        Cell(d.label.ljust(label_width), min_width=min(label_width, 12), style="bold"),
        Cell("", drop=4, min_width=6, bar=d.percent.shown),
        Cell(f"{d.percent.shown:5.1f}%"),
        # The state is what the row is for: whole up to the longest one we say.
        Cell(d.state, min_width=min(len(d.state), 27), style=state_style),
        Cell("" if d.finished else f"eta {clock(d.eta)}", drop=3),
        Cell(d.rate, drop=5),
        Cell(elapsed, drop=6),
    ]


def batch_cells(b: BatchView) -> list[Cell]:
    rate = f"{b.files_per_s:.1f} files/s" if b.files_per_s is not None else "— files/s"
    cells = [
        Cell(f"{b.done + b.failed}/{b.total} done", style="bold"),
        Cell("", drop=4, min_width=6, bar=b.percent.shown),
        Cell(f"{b.percent.shown:5.1f}%"),
    ]
    if b.failed:
        cells.append(Cell(f"{b.failed} failed", style="red"))
    cells += [
        Cell(rate, drop=3),
        Cell(f"eta {clock(b.eta)}"),
        Cell(f"{b.running} running, {b.queued} queued", drop=5),
    ]
    return cells


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
        facts: dict[str, dict[str, object]] | None = None,
        local_pool: bool = False,
    ) -> None:
        """``dags`` maps DAG id -> label (the input's file name); ``facts`` the inputs'
        probe facts where known (they weigh the stages before the DAG's probe has run).
        Without a terminal the view prints lines, or nothing when ``quiet`` (``--json``
        output must leave stderr to the one-line errors). Polls ride out a Redis outage
        through ``outage`` (raising RedisGaveUpError after its give-up time).
        ``local_pool``: this process runs the workers (embedded mode), so a waiting job
        waits for a slot, never for a worker that is still starting."""
        self.client = client
        self.local_pool = local_pool
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.quiet = quiet and not self.live
        self.outage = outage or Outage(notice=self.notice)
        known = facts or {}
        self.views = [
            DagView(d, label, facts=dict(known.get(d) or {})) for d, label in dags.items()
        ]
        self.speeds = StageSpeeds()
        self.batch = BatchView(total=len(self.views), started=time.monotonic())
        self.console = Console(file=self.stream, force_terminal=self.live or None, highlight=False)
        self._live: Live | None = None
        self._said: dict[str, str] = {}  # plain lines: what was last said of each DAG
        self._batch_said = 0.0
        self._batch_line = ""

    def __enter__(self) -> ProgressView:
        if self.live:
            self._live = Live(
                Group(),
                console=self.console,
                auto_refresh=False,
                transient=False,
                vertical_overflow="crop",
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None

    def notice(self, line: str) -> None:
        """One line on the view's stream, above the bars when they are live."""
        if self.live:
            self.console.print(f"mediapipe: {line}", markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(f"mediapipe: {line}\n")
            self.stream.flush()

    def finished(self) -> bool:
        return all(v.finished for v in self.views)

    def poll(self) -> None:
        pending = [v for v in self.views if not v.finished]
        if pending:
            keys = self.client.keys
            snap = read_dags(self.client.redis, keys, [v.dag_id for v in pending])
            served = None if self.local_pool else live_queues(self.client.redis, keys)
            now = time.monotonic()
            self.speeds.new_poll()
            for v in pending:
                got = snap.dags.get(v.dag_id)
                if got is None:
                    v.mark_gone()
                    continue
                v.update(got, snap.now_ms, self.speeds, served)
                if v.started is None and any(j.started_ms for j in got.jobs.values()):
                    v.started = now
        self.batch.update(self.views, time.monotonic())
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
        elif not self.quiet:
            self._print_changes()

    def run_until_done(self, interval: float = 0.15, timeout: float | None = None) -> None:
        deadline = time.monotonic() + timeout if timeout else None
        while not self.finished():
            self.outage.call(self.poll)
            if self.finished() or (deadline and time.monotonic() > deadline):
                break
            time.sleep(interval)

    # -- a terminal -----------------------------------------------------------
    def _render(self) -> Group:
        width, height = self.console.size
        width = max(width - 1, 20)  # the last column would make some terminals wrap
        now = time.monotonic()
        many = len(self.views) > 1
        rows = len(self.views) + (1 if many else 0)
        if rows <= height - 2:
            shown = self.views
        else:
            running = [v for v in self.views if not v.finished and v.active]
            started = [v for v in self.views if not v.finished and not v.active and v.started]
            shown = (running + started)[: max(height - 3, 1)]
        label_width = max((len(v.label) for v in shown), default=8)
        label_width = min(label_width, max(width // 3, 12))
        lines = [layout(batch_cells(self.batch), width)] if many else []
        lines += [layout(dag_cells(v, label_width, now), width) for v in shown]
        return Group(*lines)

    # -- plain lines ----------------------------------------------------------
    def _print_changes(self) -> None:
        few = len(self.views) <= PLAIN_FILES
        out: list[str] = []
        for v in self.views:
            said = v.state if v.finished else f"{v.state}"
            if self._said.get(v.dag_id) == said:
                continue
            self._said[v.dag_id] = said
            if few or (v.finished and v.ended != "completed"):
                eta = "" if v.finished else f" eta {clock(v.eta)}"
                out.append(f"{v.label}: {v.state} {v.percent.shown:.1f}%{eta}")
        if len(self.views) > 1:
            now = time.monotonic()
            b = self.batch
            line = self._batch_text()
            due = now - self._batch_said >= PLAIN_BATCH_EVERY
            if line != self._batch_line and (due or b.done + b.failed == b.total):
                self._batch_line, self._batch_said = line, now
                out.append(line)
        if out:
            self.stream.write("".join(f"{line}\n" for line in out))
            self.stream.flush()

    def _batch_text(self) -> str:
        b = self.batch
        rate = f"{b.files_per_s:.1f} files/s" if b.files_per_s is not None else "— files/s"
        failed = f", {b.failed} failed" if b.failed else ""
        return (
            f"batch: {b.done + b.failed}/{b.total} done{failed}, {b.percent.shown:.1f}%,"
            f" {rate}, eta {clock(b.eta)} ({b.running} running, {b.queued} queued)"
        )


def follower(url: str | None, namespace: str, outage: Outage) -> Client:
    """A client for following DAGs: not checked at connect time (its calls ride out an
    outage) and with socket timeouts, so a server that hangs instead of closing its
    connections counts as down too. redis-py retries once (a connection gone stale);
    longer outages are ``outage``'s, which says so and knows when to give up (a client
    loads the transitions into Redis, so even making one goes through it)."""
    r = connect(
        url,
        check=False,
        namespace=namespace,
        socket_timeout=10,
        socket_connect_timeout=5,
        retry=Retry(NoBackoff(), 1),
    )
    return outage.call(lambda: Client(r, namespace=namespace))
