"""status, watch, dlq list/show, workers and submit: every error is one stderr line with
the documented exit code (2 bad input or option, 3 Redis unreachable), no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import FIXTURES

COMMANDS = [
    ["status"],
    ["status", "6d0ea5aa51af494f"],
    ["status", "--json"],
    ["watch", "6d0ea5aa51af494f"],
    ["dlq", "list", "--json"],
    ["dlq", "show", "6d0ea5aa51af494f/probe"],
    ["workers", "--json"],
    ["submit", str(FIXTURES / "clip.mp4"), "--no-wait", "--json"],
]


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "MEDIAPIPE_HOME": str(tmp_path / "home"), **env}
    environ.pop("MEDIAPIPE_REDIS_URL", None)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "mediajobs", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )


def _one_line(res: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.endswith("\n"), res.stderr
    return res.stderr


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_unreachable_redis_is_one_line_and_exit_3(args: list[str], tmp_path: Path) -> None:
    res = _run(
        args,
        tmp_path,
        MEDIAPIPE_REDIS_URL="redis://127.0.0.1:1/0",
        MEDIAPIPE_REDIS_GIVE_UP="0",  # watch rides out outages; here it gives up at once
    )
    assert res.returncode == 3, res.stderr
    assert "Redis unreachable" in _one_line(res)


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_bad_option_is_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    res = _run([*args, "--no-such-option"], tmp_path)
    assert res.returncode == 2, res.stderr
    line = _one_line(res)
    assert "--no-such-option" in line and line.startswith(f"mediapipe {args[0]}")
    assert res.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["status", "no such dag"],
        ["status", "6d0ea5aa51af494f"],
        ["watch", "6d0ea5aa51af494f"],
        ["dlq", "show", "6d0ea5aa51af494f/probe"],
        ["status", "--limit", "0"],
    ],
    ids=" ".join,
)
def test_an_unknown_or_invalid_dag_is_one_line_and_exit_2(
    args: list[str], tmp_path: Path, redis_url: str, namespace: str
) -> None:
    res = _run(["--namespace", namespace, *args], tmp_path, MEDIAPIPE_REDIS_URL=redis_url)
    assert res.returncode == 2, res.stderr
    assert _one_line(res).startswith("mediapipe")
