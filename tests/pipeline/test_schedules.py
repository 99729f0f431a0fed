"""Scheduled DAGs: one firing per tick however many schedulers run, DST days, misfires
after an outage, watched folders that submit each content once, pause/resume/remove.

Time is simulated: every scheduler gets the same injected clock, stepped through the
window under test, while Redis (the suite's real server) arbitrates the claims.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from click.testing import CliRunner

import stages  # noqa: F401  (registers the media stages the image preset submits)
from mediajobs import presets
from mediajobs.schedule_commands import schedule_group
from mediajobs.schedule_firing import Firing, Scheduler, run_scheduler
from pipeline.client import Client
from pipeline.clock import redis_now_ms
from pipeline.cron import parse_every
from pipeline.errors import SubmissionError
from pipeline.registry import REGISTRY
from pipeline.schedules import Schedules

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PARIS = ZoneInfo("Europe/Paris")
UTC = ZoneInfo("UTC")


class Clock:
    """The injected clock: every scheduler of a test reads the same simulated time."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def at(
    tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, sec: int = 0, fold: int = 0
) -> float:
    return datetime(y, mo, d, h, mi, sec, tzinfo=tz, fold=fold).timestamp()


def local(t: float, tz: ZoneInfo = PARIS) -> str:
    return datetime.fromtimestamp(t, tz).isoformat()


@pytest.fixture
def clients(redis_url: str, namespace: str) -> Iterator[list[Client]]:
    """Two clients on their own connections: two schedulers as two nodes would run them."""
    conns = [redis.Redis.from_url(redis_url) for _ in range(2)]
    yield [Client(c, namespace=namespace, registry=REGISTRY) for c in conns]
    for c in conns:
        c.close()


@pytest.fixture
def media_client(clients: list[Client]) -> Client:
    return clients[0]


def simulate(clients: list[Client], clock: Clock, end: float, step: float = 60.0) -> list[Firing]:
    """Step the clock to ``end``; at each step every scheduler ticks at the same moment,
    in its own thread, so their claims race."""
    schedulers = [Scheduler(c, clock=clock) for c in clients]
    fired: list[Firing] = []
    with ThreadPoolExecutor(len(schedulers)) as pool:
        while clock.t < end:
            clock.t = min(clock.t + step, end)
            for result in pool.map(lambda s: s.tick(), schedulers):
                fired += result
    return fired


def ticks(fired: list[Firing], tz: ZoneInfo = PARIS) -> list[str]:
    assert all(f.error is None for f in fired), [f.error for f in fired]
    return [local(f.tick, tz) for f in sorted(fired, key=lambda f: f.tick)]


def events_of(client: Client, ev: str) -> list[dict[str, str]]:
    out = []
    entries: Any = client.redis.xrange(client.keys.events)
    for _, raw in entries:
        f = {k.decode(): v.decode() for k, v in raw.items()}
        if f["ev"] == ev:
            out.append(f)
    return out


# -- exactly once across schedulers ----------------------------------------------------------
def test_two_schedulers_fire_every_minute_exactly_once(
    clients: list[Client], tmp_path: Path
) -> None:
    start = at(UTC, 2026, 5, 4, 10, 0, 0)
    clock = Clock(start)
    Schedules(clients[0], clock=clock).add(
        "minutely", str(tmp_path / "*.jpg"), cron="*/1 * * * *", preset="image"
    )
    # 17 s steps: polls never line up with the minute, as with real nodes.
    fired = simulate(clients, clock, start + 6 * 60 + 30, step=17)
    assert [f.tick for f in fired] == [start + 60 * i for i in range(1, 7)]
    assert not any(f.late for f in fired)
    # Each firing left one event on the namespace stream: none was fired twice.
    events = events_of(clients[0], "schedule_fired")
    assert sorted(int(e["tick"]) for e in events) == [start + 60 * i for i in range(1, 7)]


def test_claim_tick_has_one_winner_among_racing_callers(media_client: Client) -> None:
    s = Schedules(media_client, clock=Clock(1_800_000_000))
    spec = s.add("race", "/nowhere/*.jpg", every=60)
    tick = spec.created + 60
    barrier = threading.Barrier(16)

    def claim(_: int) -> int:
        barrier.wait()
        return int(
            media_client.scripts.run(
                "claim_tick", media_client.keys.prefix, "race", tick, 1, spec.id
            )
        )

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(claim, range(16)))
    assert sorted(results) == [0] * 15 + [1]
    prefix = media_client.keys.prefix
    # The tick only moves forward: an older tick is taken already, a stale id is refused.
    assert media_client.scripts.run("claim_tick", prefix, "race", tick - 60, 1, spec.id) == 0
    assert media_client.scripts.run("claim_tick", prefix, "race", tick + 60, 1, "stale") == -1


# -- daylight saving time --------------------------------------------------------------------
def _dst(clients: list[Client], tmp: Path, cron: str, start: float, end: float) -> list[str]:
    clock = Clock(start)
    Schedules(clients[0], clock=clock).add("dst", str(tmp / "*.jpg"), cron=cron, tz="Europe/Paris")
    return ticks(simulate(clients, clock, end, step=60))


def test_spring_forward_daily_tick_in_the_gap_fires_once_at_the_end_of_the_gap(
    clients: list[Client], tmp_path: Path
) -> None:
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    fired = _dst(
        clients, tmp_path, "30 2 * * *", at(PARIS, 2026, 3, 28, 12), at(PARIS, 2026, 3, 30, 12)
    )
    assert fired == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]


def test_spring_forward_interval_ticks_skip_the_missing_hour(
    clients: list[Client], tmp_path: Path
) -> None:
    fired = _dst(
        clients, tmp_path, "*/30 * * * *", at(PARIS, 2026, 3, 29, 0), at(PARIS, 2026, 3, 29, 5)
    )
    assert fired == [
        "2026-03-29T00:30:00+01:00",
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:00 and 02:30 do not exist
        "2026-03-29T03:30:00+02:00",
        "2026-03-29T04:00:00+02:00",
        "2026-03-29T04:30:00+02:00",
        "2026-03-29T05:00:00+02:00",
    ]


def test_fall_back_daily_tick_in_the_repeated_hour_fires_once(
    clients: list[Client], tmp_path: Path
) -> None:
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice, the job runs once.
    fired = _dst(
        clients, tmp_path, "30 2 * * *", at(PARIS, 2026, 10, 24, 12), at(PARIS, 2026, 10, 26, 12)
    )
    assert fired == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_fall_back_repeated_wall_clock_times_fire_once_each(
    clients: list[Client], tmp_path: Path
) -> None:
    fired = _dst(
        clients,
        tmp_path,
        "*/30 * * * *",
        at(PARIS, 2026, 10, 25, 0),
        at(PARIS, 2026, 10, 25, 4),  # 04:00 CET
    )
    assert fired == [
        "2026-10-25T00:30:00+02:00",
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        # 02:00 and 02:30 CET are the same wall-clock times again: not fired twice.
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]


def test_fall_back_every_minute_fires_each_wall_clock_minute_once(
    clients: list[Client], tmp_path: Path
) -> None:
    fired = _dst(
        clients,
        tmp_path,
        "*/1 * * * *",
        at(PARIS, 2026, 10, 25, 1, 58),
        at(PARIS, 2026, 10, 25, 3, 2),
    )
    wall = [t[11:16] for t in fired]
    assert len(fired) == len(set(wall)) == 64  # 01:59 .. 03:02, no minute twice
    assert fired[1] == "2026-10-25T02:00:00+02:00"
    assert fired[60] == "2026-10-25T02:59:00+02:00"
    assert fired[61] == "2026-10-25T03:00:00+01:00"


# -- misfires --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("policy", "back_at", "expected"),
    [
        # Down from 00:05:10 to 00:16:30: 00:10 and 00:15 were missed. One late catch-up
        # for the newest of them, not two.
        ("once", (0, 16, 30), [("00:05", False), ("00:15", True), ("00:20", False)]),
        # skip: 00:15 is found 90 s late (grace 60 s), so it does not fire at all.
        ("skip", (0, 16, 30), [("00:05", False), ("00:20", False)]),
        # skip, back at 00:15:30: 00:15 is 30 s old, on time, and fires; 00:10 does not.
        ("skip", (0, 15, 30), [("00:05", False), ("00:15", False), ("00:20", False)]),
    ],
)
def test_a_missed_tick_fires_at_most_once_on_recovery(
    clients: list[Client],
    tmp_path: Path,
    policy: str,
    back_at: tuple[int, int, int],
    expected: list[tuple[str, bool]],
) -> None:
    clock = Clock(at(UTC, 2026, 1, 1, 0, 0, 0))
    s = Schedules(clients[0], clock=clock)
    s.add("m", str(tmp_path / "*.jpg"), cron="*/5 * * * *", misfire=policy, grace=60)
    fired = simulate(clients, clock, at(UTC, 2026, 1, 1, 0, 5, 10), step=10)
    clock.t = at(UTC, 2026, 1, 1, *back_at)  # the outage: nothing ticked meanwhile
    fired += simulate(clients, clock, at(UTC, 2026, 1, 1, 0, 20, 5), step=10)
    assert all(f.error is None for f in fired)
    got = [(local(f.tick, UTC)[11:16], f.late) for f in sorted(fired, key=lambda f: f.tick)]
    assert got == expected
    # Fired or skipped, the missed ticks are accounted for: none of them fires later.
    assert s.lasts(["m"]) == [int(at(UTC, 2026, 1, 1, 0, 20))]


def test_a_ten_minute_outage_fires_a_minutely_schedule_once(
    clients: list[Client], tmp_path: Path
) -> None:
    start = at(UTC, 2026, 1, 1, 12, 0, 0)
    clock = Clock(start)
    Schedules(clients[0], clock=clock).add("m", str(tmp_path / "*.jpg"), cron="*/1 * * * *")
    clock.t = start + 10 * 60 + 5
    fired = simulate(clients, clock, start + 10 * 60 + 20, step=5)
    assert [f.tick for f in fired] == [start + 600]


# -- what a firing submits -------------------------------------------------------------------
def _copy(name: str, dest: Path, as_name: str | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / (as_name or name)
    shutil.copyfile(FIXTURES / name, target)
    return target


def _inputs(client: Client, fired: list[Firing]) -> list[str]:
    out = []
    for f in fired:
        assert f.error is None, f.error
        for sub in f.submitted:
            dag = client.dag(sub.dag_id)
            assert dag is not None
            assert dag["meta"]["input"] == str(Path(sub.path).resolve())
            assert dag["meta"]["preset"] == "image"
            out.append(Path(sub.path).name)
    return sorted(out)


def test_a_glob_schedule_submits_each_content_once(media_client: Client, tmp_path: Path) -> None:
    drop, out = tmp_path / "drop", tmp_path / "out"
    _copy("cmyk.jpg", drop)
    _copy("alpha.png", drop)
    clock = Clock(1_900_000_000)
    s = Schedules(media_client, clock=clock)
    s.add("drop", str(drop / "*"), every=60, preset="image", out=str(out), settle=0)
    sched = Scheduler(media_client, clock=clock)

    clock.t += 60
    first = sched.tick()
    assert _inputs(media_client, first) == ["alpha.png", "cmyk.jpg"]
    assert {Path(p).name for f in first for p in [x.path for x in f.submitted]} == {
        "alpha.png",
        "cmyk.jpg",
    }

    _copy("palette_alpha.png", drop)  # a new file arrives
    clock.t += 60
    assert _inputs(media_client, sched.tick()) == ["palette_alpha.png"]

    _copy("cmyk.jpg", drop, as_name="renamed-copy.jpg")  # known content, new name
    clock.t += 60
    again = sched.tick()
    assert len(again) == 1 and again[0].submitted == () and again[0].rejected == ()
    assert s.seen_count("drop") == 3

    # Content that is not media is rejected once, then remembered, not retried every tick.
    _copy("not_an_image.jpg", drop)
    clock.t += 60
    bad = sched.tick()
    assert [Path(p).name for p, _ in bad[0].rejected] == ["not_an_image.jpg"]
    clock.t += 60
    assert sched.tick()[0].rejected == ()


def test_a_firing_that_died_before_marking_seen_gets_the_same_dag_back(
    media_client: Client, tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    _copy("alpha.png", drop)
    clock = Clock(1_900_000_000)
    s = Schedules(media_client, clock=clock)
    s.add("drop", str(drop / "*.png"), every=60, preset="image", out=str(tmp_path / "o"), settle=0)
    sched = Scheduler(media_client, clock=clock)
    clock.t += 60
    (first,) = sched.tick()[0].submitted
    media_client.redis.delete(s.seen_key("drop"))  # as if the node died before the SADD
    clock.t += 60
    (again,) = sched.tick()[0].submitted
    assert again.dag_id == first.dag_id and first.created and not again.created


def test_a_second_scheduler_does_not_resubmit_what_the_first_did(
    clients: list[Client], tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    _copy("cmyk.jpg", drop)
    clock = Clock(1_900_000_000)
    Schedules(clients[0], clock=clock).add(
        "drop", str(drop), every=60, preset="image", out=str(tmp_path / "out"), settle=0
    )
    fired = simulate(clients, clock, clock.t + 300, step=30)  # a folder, not a glob
    assert len(fired) == 5
    assert _inputs(clients[0], fired) == ["cmyk.jpg"]


def test_a_file_still_being_written_waits_for_a_later_tick(
    media_client: Client, tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    fresh = _copy("cmyk.jpg", drop)
    clock = Clock(1_900_000_000)
    Schedules(media_client, clock=clock).add(
        "drop", str(drop / "*.jpg"), every=60, preset="image", out=str(tmp_path / "out"), settle=30
    )
    sched = Scheduler(media_client, clock=clock)
    clock.t += 60
    assert sched.tick()[0].submitted == ()  # modified just now: not settled
    old = time.time() - 120
    os.utime(fresh, (old, old))
    clock.t += 60
    assert _inputs(media_client, sched.tick()) == ["cmyk.jpg"]


def test_every_ten_minutes_resubmits_a_single_path(media_client: Client, tmp_path: Path) -> None:
    src = _copy("cmyk.jpg", tmp_path / "in")
    clock = Clock(1_900_000_000)
    start = clock.t
    spec = Schedules(media_client, clock=clock).add(
        "poster", str(src), every=parse_every("10m"), preset="image", out=str(tmp_path / "out")
    )
    assert spec.every == 600 and not spec.watch
    sched = Scheduler(media_client, clock=clock)
    fired: list[Firing] = []
    for dt in (300, 599, 600, 900, 1199, 1200, 1500):
        clock.t = start + dt
        fired += sched.tick()
    assert [f.tick - start for f in fired] == [600, 1200]
    dags = [sub.dag_id for f in fired for sub in f.submitted]
    assert len(set(dags)) == 2  # a single path runs again on every tick
    assert _inputs(media_client, fired) == ["cmyk.jpg", "cmyk.jpg"]


# -- managing schedules ----------------------------------------------------------------------
def test_pause_resume_and_remove(clients: list[Client], tmp_path: Path) -> None:
    start = at(UTC, 2026, 6, 1, 8, 0, 0)
    clock = Clock(start)
    s = Schedules(clients[0], clock=clock)
    spec = s.add("p", str(tmp_path / "*.jpg"), cron="*/1 * * * *")
    assert len(simulate(clients, clock, start + 90, step=15)) == 1  # 08:01

    s.pause("p")
    assert simulate(clients, clock, start + 330, step=15) == []  # 08:02 .. 08:05 while paused
    s.resume("p")
    # No catch-up on resume (05:30): the next firing is 08:06.
    fired = simulate(clients, clock, start + 400, step=15)
    assert [f.tick - start for f in fired] == [360]

    assert s.remove("p")
    assert s.get("p") is None
    assert clients[0].redis.exists(s.last_key("p"), s.seen_key("p")) == 0
    assert simulate(clients, clock, start + 600, step=15) == []
    # A scheduler that read the schedule before the remove cannot fire it afterwards.
    prefix = clients[0].keys.prefix
    assert clients[0].scripts.run("claim_tick", prefix, "p", start + 600, 1, spec.id) == -1
    assert not s.remove("p")
    with pytest.raises(SubmissionError):
        s.resume("p")


def test_resuming_a_running_schedule_drops_nothing(clients: list[Client], tmp_path: Path) -> None:
    start = at(UTC, 2026, 6, 1, 8, 0, 0)
    clock = Clock(start)
    s = Schedules(clients[0], clock=clock)
    s.add("r", str(tmp_path / "*.jpg"), cron="*/1 * * * *")
    clock.t = start + 65  # 08:01 is due and no scheduler has taken it yet
    s.resume("r")
    assert [f.tick - start for f in simulate(clients, clock, start + 70, step=5)] == [60]


def test_a_paused_schedule_cannot_be_claimed(media_client: Client, tmp_path: Path) -> None:
    s = Schedules(media_client, clock=Clock(1_900_000_000))
    spec = s.add("p", str(tmp_path / "*.jpg"), every=60)
    s.pause("p")
    prefix = media_client.keys.prefix
    tick = spec.created + 60
    assert media_client.scripts.run("claim_tick", prefix, "p", tick, 1, spec.id) == -2


def test_invalid_schedules_are_rejected(media_client: Client, tmp_path: Path) -> None:
    s = Schedules(media_client, check_preset=presets.checked)
    glob_ = str(tmp_path / "*.jpg")
    for kwargs in (
        {"cron": "61 * * * *"},
        {"cron": "* * * * * *"},
        {"cron": "0 0 30 2 *"},  # never fires
        {"cron": "*/5 * * * *", "tz": "Mars/Olympus"},
        {"every": 0},
        {},
        {"cron": "* * * * *", "every": 60},
        {"every": 60, "misfire": "burst"},
        {"every": 60, "preset": "nope"},
    ):
        with pytest.raises(SubmissionError):
            s.add("bad", glob_, **kwargs)
    with pytest.raises(SubmissionError):
        s.add("has space", glob_, every=60)
    s.add("ok", glob_, every=60)
    with pytest.raises(SubmissionError, match="exists"):
        s.add("ok", glob_, every=60)
    assert [parse_every(x) for x in ("90", "30s", "10m", "2h", "1d")] == [90, 30, 600, 7200, 86400]
    with pytest.raises(SubmissionError):
        parse_every("10 minutes")


def test_schedules_stamp_and_compare_with_redis_clock_not_this_hosts(
    media_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: 0.0)  # this host's clock is far off
    spec = Schedules(media_client).add("clocked", str(tmp_path / "*.jpg"), every=60)
    scheduled_now = Scheduler(media_client).schedules.now()
    monkeypatch.undo()
    redis_now = redis_now_ms(media_client.redis) / 1000
    assert abs(spec.created - redis_now) < 5 and abs(scheduled_now - redis_now) < 5


def test_run_scheduler_fires_in_a_thread_until_stopped(
    media_client: Client, tmp_path: Path
) -> None:
    clock = Clock(1_900_000_000)
    Schedules(media_client, clock=clock).add("bg", str(tmp_path / "*.jpg"), every=60)
    clock.t += 61
    stop = threading.Event()
    thread = threading.Thread(
        target=run_scheduler, args=(media_client, stop, 0.02), kwargs={"clock": clock}
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not events_of(media_client, "schedule_fired") and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert [e["schedule"] for e in events_of(media_client, "schedule_fired")] == ["bg"]


def test_the_schedule_commands(redis_url: str, namespace: str, tmp_path: Path) -> None:
    runner = CliRunner()
    obj = {"url": redis_url, "namespace": namespace}

    def cli(*args: str) -> tuple[int, str]:
        res = runner.invoke(schedule_group(), list(args), obj=obj)
        return res.exit_code, res.output

    glob_ = str(tmp_path / "*.jpg")
    code, out = cli(
        "add", "nightly", "--cron", "30 2 * * *", "--tz", "Europe/Paris", "--preset", "image", glob_
    )
    assert code == 0, out
    assert "first run" in out and "+0" in out
    assert cli("add", "every", "--every", "10m", glob_)[0] == 0
    code, out = cli("list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["nightly"]["cron"] == "30 2 * * *" and rows["nightly"]["tz"] == "Europe/Paris"
    assert rows["every"]["every"] == 600 and rows["every"]["watch"] is True
    assert cli("pause", "nightly") == (0, "paused nightly\n")
    assert "paused" in cli("list")[1]
    assert cli("resume", "nightly")[0] == 0
    assert cli("remove", "nightly") == (0, "removed nightly\n")
    code, out = cli("remove", "nightly")
    assert code == 2 and "unknown schedule" in out
    code, out = cli("add", "bad", "--cron", "nope", glob_)
    assert code == 2
    code, out = cli("add", "two", "--every", "1m", "a.jpg", "b.jpg")  # an unquoted glob
    assert code == 2 and "quote" in out
    for sub in ("add", "list", "remove", "pause", "resume", "run"):
        assert "Example" in cli(sub, "--help")[1]
