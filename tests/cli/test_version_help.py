"""`mediapipe --version`/`-V` and `-h` on every command, as the installed command runs."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

COMMAND = [sys.executable, "-m", "mediajobs"]


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_the_version_is_one_line_and_exit_0(flag: str) -> None:
    out = subprocess.run([*COMMAND, flag], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"mediapipe {importlib.metadata.version('mediajobs')}\n"
    assert out.stderr == ""


def test_dash_h_is_help_on_the_command_and_every_subcommand() -> None:
    top = subprocess.run([*COMMAND, "-h"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0 and top.stdout.startswith("Usage: mediapipe [OPTIONS] COMMAND")
    commands = [
        line.split()[0]
        for line in top.stdout.split("Commands:", 1)[1].splitlines()
        if line.startswith("  ") and line.strip()
    ]
    assert {"submit", "worker", "status", "dlq", "schedule"} <= set(commands)
    for name in commands:
        sub = subprocess.run([*COMMAND, name, "-h"], capture_output=True, text=True, timeout=60)
        assert sub.returncode == 0, (name, sub.stderr)
        assert sub.stdout.startswith(f"Usage: mediapipe {name} "), name
