"""Running the real ``mediapipe`` command as a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.server import EmbeddedServer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


@dataclass
class Cli:
    env: dict[str, str]
    cwd: Path

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """Embedded mode: no MEDIAPIPE_REDIS_URL, a private MEDIAPIPE_HOME for the server."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "MEDIAPIPE_REDIS_URL"}
    env.update(MEDIAPIPE_HOME=str(home), PYTHONPATH=str(ROOT))
    yield Cli(env, tmp_path)
    EmbeddedServer(home).stop()


@pytest.fixture
def fleet_cli(tmp_path: Path, redis_url: str, namespace: str) -> Cli:
    env = dict(os.environ)
    env.update(
        MEDIAPIPE_REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
        MEDIAPIPE_HOME=str(tmp_path / "unused-home"),
    )
    return Cli(env, tmp_path)
