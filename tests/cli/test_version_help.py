"""`mediapipe --version`/`-V` and `-h` on every command, as the installed command runs."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from typing import Any

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


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["submit", "in.jpg"],
        ["worker"],
        ["watch", "abc"],
        ["dlq", "list"],
        ["dashboard"],
        ["prune"],
        ["schedule", "list"],
    ],
)
def test_a_malformed_redis_url_is_one_line_and_exit_2(args: list[str], tmp_path: Any) -> None:
    env = {**os.environ, "MEDIAPIPE_HOME": str(tmp_path)}
    env.pop("MEDIAPIPE_REDIS_URL", None)
    for how in ("flag", "env"):
        cmd = (
            [*COMMAND, "--redis", "http://localhost:1/", *args]
            if how == "flag"
            else [*COMMAND, *args]
        )
        if how == "env":
            env["MEDIAPIPE_REDIS_URL"] = "localhost:6379"
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
        assert out.returncode == 2, (how, out.stderr)
        assert out.stderr.count("\n") == 1 and "is not a Redis URL" in out.stderr, (how, out.stderr)
        assert out.stderr.startswith("mediapipe: "), out.stderr
