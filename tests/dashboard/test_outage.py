"""The dashboard waits for Redis at start, serves 503s through an outage (saying so once),
and gives up only after the configured time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.server import EmbeddedServer
from tests.dashboard.test_command import GROUP, ROOT
from tests.workers.conftest import wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    s = EmbeddedServer(tmp_path / "home")  # started by the test
    yield s
    s.stop()


def _dashboard(url: str, tmp_path: Path, **env: str) -> tuple[subprocess.Popen[str], Path]:
    err = tmp_path / "dashboard.err"
    with open(err, "w") as e:
        proc = subprocess.Popen(
            [sys.executable, "-c", GROUP, "--redis", url, "dashboard", "--port", "0"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=subprocess.PIPE,
            stderr=e,
            text=True,
        )
    return proc, err


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            json.load(resp)
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _redis_lines(err: Path) -> list[str]:
    return [line for line in err.read_text().splitlines() if "Redis" in line]


def test_started_before_redis_it_waits_then_rides_out_a_restart(
    server: EmbeddedServer, tmp_path: Path
) -> None:
    proc, err = _dashboard(server.url, tmp_path)
    try:
        wait_for(lambda: "Redis unreachable" in err.read_text(), 30, "the notice")
        assert proc.poll() is None
        server.ensure_running()
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert m, line
        overview = m.group(1) + "api/overview"
        assert _get(overview) == 200
        server.stop()
        assert _get(overview) == 503
        wait_for(lambda: len(_redis_lines(err)) >= 3, 30, "the outage notice")
        server.ensure_running()
        wait_for(lambda: _get(overview) == 200, 30, "the dashboard to serve again")
        wait_for(lambda: len(_redis_lines(err)) >= 4, 30, "the recovery line")
        lines = _redis_lines(err)
        assert [("unreachable" in x, "is back" in x) for x in lines] == [
            (True, False),
            (False, True),
            (True, False),
            (False, True),
        ], lines
        assert "Traceback" not in err.read_text()
    finally:
        proc.terminate()
        proc.wait(10)


def test_gives_up_after_the_configured_time(server: EmbeddedServer, tmp_path: Path) -> None:
    started = time.monotonic()
    proc, err = _dashboard(server.url, tmp_path, MEDIAPIPE_REDIS_GIVE_UP="1.5")
    assert proc.wait(30) == 3
    assert time.monotonic() - started >= 1.5
    lines = [line for line in err.read_text().splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert "Redis unreachable" in lines[0] and "giving up" in lines[1]
