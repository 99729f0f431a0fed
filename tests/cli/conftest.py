"""Running the real ``mediapipe`` command as a subprocess, as a user would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.server import EmbeddedServer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Cli:
    env: dict[str, str]
    cwd: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mediajobs", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "mediajobs", *args],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            # As a terminal starts a command: SIGINT at its default. A suite started in the
            # background by a non-interactive shell ignores SIGINT, and an ignored signal
            # is inherited across exec, so a Ctrl-C test would see it ignored.
            preexec_fn=_default_sigint,
        )

    def worker(self, namespace: str, *args: str) -> subprocess.Popen[str]:
        """A `mediapipe worker` process, stopped (if still running) when the test ends."""
        proc = self.popen(
            "--namespace", namespace, "worker", "--grace", "5", "--log-level", "WARNING", *args
        )
        self.procs.append(proc)
        return proc

    def stop_workers(self) -> None:
        """Kill each worker's whole process group (each starts a session of its own): what
        it started goes too, such as the HTTP servers test_url_inputs.py runs beside its
        worker, which outlived the worker (and the suite) when only the worker was killed."""
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def pty_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a command run under a pseudo-terminal: without COLUMNS and LINES, which
    override the terminal's size (rich reads them first). pytest-xdist's worker processes
    have COLUMNS=80 and LINES=24 in their environment: inherited, they drew a 60-column
    terminal 80 columns wide."""
    return {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """Embedded mode: no MEDIAPIPE_REDIS_URL, a private MEDIAPIPE_HOME for the server."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "MEDIAPIPE_REDIS_URL"}
    env.update(MEDIAPIPE_HOME=str(home), PYTHONPATH=str(ROOT))
    c = Cli(env, tmp_path)
    yield c
    c.stop_workers()
    EmbeddedServer(home).stop()


@pytest.fixture
def fleet_cli(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[Cli]:
    env = dict(os.environ)
    env.update(
        MEDIAPIPE_REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
        MEDIAPIPE_HOME=str(tmp_path / "unused-home"),
    )
    c = Cli(env, tmp_path)
    yield c
    c.stop_workers()
