"""Every command `mediapipe -h` lists, found by walking the help (so a new command is
covered without editing this file): an unreachable Redis, a malformed Redis URL and a bad
option are each one stderr line with the documented exit code (3, 2 and 2), never a
traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cli.conftest import FIXTURES, ROOT

COMMAND = [sys.executable, "-m", "mediajobs"]
# Commands that never talk to the fleet's Redis: the embedded server's own controls and
# the settings report.
NO_REDIS: set[tuple[str, ...]] = {("config",), ("config", "show"), ("config", "path")}
NO_REDIS |= {("server", "start"), ("server", "status"), ("server", "stop"), ("server", "url")}
ARGUMENTS = {
    "DAG_ID": "6d0ea5aa51af494f",
    "JOB_ID": "6d0ea5aa51af494f/probe",
    "PATHS": str(FIXTURES / "cmyk.jpg"),
    "QUEUE": "default",
    "NAME": "nightly",
}


def _env(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "MEDIAPIPE_HOME": str(tmp), "PYTHONPATH": str(ROOT)}
    env["MEDIAPIPE_REDIS_GIVE_UP"] = "0"  # long-running commands give up at once
    env.pop("MEDIAPIPE_REDIS_URL", None)
    return env


def _leaves(path: list[str], env: dict[str, str]) -> list[list[str]]:
    out = subprocess.run([*COMMAND, *path, "-h"], capture_output=True, text=True, env=env)
    if "Commands:" not in out.stdout:
        return [path]
    names = [
        line.split()[0]
        for line in out.stdout.split("Commands:", 1)[1].splitlines()
        if line.startswith("  ") and line.strip()
    ]
    return [leaf for name in names for leaf in _leaves([*path, name], env)]


def _invocation(leaf: list[str], env: dict[str, str]) -> list[str]:
    """The command with a plausible value for each required argument."""
    usage = subprocess.run(
        [*COMMAND, *leaf, "-h"], capture_output=True, text=True, env=env
    ).stdout.splitlines()[0]
    args = re.findall(r"\b([A-Z][A-Z_]+)\b", usage.split("[OPTIONS]", 1)[-1])
    return [*leaf, *(ARGUMENTS.get(a, "x") for a in args)]


def _one_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1, res.stderr
    return lines[0]


# (what goes before the command, after it, the exit code, what the line says)
Case = tuple[list[str], list[str], int, str]
BAD_OPTION: Case = ([], ["--nope"], 2, "--nope")
MALFORMED_URL: Case = (["--redis", "http://queue-host:6379/"], [], 2, "is not a Redis URL")
UNREACHABLE: Case = (["--redis", "redis://127.0.0.1:1/0"], [], 3, "unreachable")


def _check(leaf: list[str], env: dict[str, str]) -> None:
    cmd = _invocation(leaf, env)
    cases = [BAD_OPTION] if tuple(leaf) in NO_REDIS else [BAD_OPTION, MALFORMED_URL, UNREACHABLE]
    for before, after, code, says in cases:
        res = subprocess.run(
            [*COMMAND, *before, *cmd, *after],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert res.returncode == code, (cmd, before, after, res.stderr)
        assert says in _one_line(res), (cmd, before, after)


def test_every_command_says_one_line_for_an_unreachable_redis_a_bad_url_and_a_bad_option(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    leaves = _leaves([], env)
    assert len(leaves) >= 20 and ["worker"] in leaves and ["dlq", "list"] in leaves
    # Each check is a few processes that mostly wait on Python's start-up: run 4 at once.
    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(_check, leaf, env) for leaf in leaves]:
            done.result()


@pytest.mark.parametrize("leaf", [["server", "status"], ["config"]])
def test_the_commands_without_redis_ignore_an_unreachable_one(
    leaf: list[str], tmp_path: Path
) -> None:
    env = _env(tmp_path)
    if subprocess.run([*COMMAND, *leaf, "-h"], capture_output=True, env=env).returncode != 0:
        pytest.skip(f"no {' '.join(leaf)} command")
    res = subprocess.run(
        [*COMMAND, "--redis", "redis://127.0.0.1:1/0", *leaf],
        capture_output=True,
        text=True,
        env=env,
    )
    # `server status` exits 1 when the embedded server is not running (its help says so)
    assert res.returncode in (0, 1) and "unreachable" not in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
