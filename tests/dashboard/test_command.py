"""``dashboard_command()`` run as a process, under a group that passes ``ctx.obj`` the way
``mediajobs.cli.main`` does."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import http_status

ROOT = Path(__file__).resolve().parents[2]
GROUP = """
import click
from mediajobs.dashboard import dashboard_command

@click.group()
@click.option("--redis", "url")
@click.option("--namespace", default="mp")
@click.pass_context
def main(ctx, url, namespace):
    ctx.obj = {"url": url, "namespace": namespace}

main.add_command(dashboard_command(), "dashboard")
main()
"""


def _start(
    redis_url: str, namespace: str, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            GROUP,
            "--redis",
            redis_url,
            "--namespace",
            namespace,
            "dashboard",
            "--port",
            "0",
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        p.terminate()
        p.wait(10)


def test_prints_a_localhost_url_with_a_random_token_that_unlocks_actions(
    redis_url: str, namespace: str, procs: list[subprocess.Popen[str]]
) -> None:
    proc, line = _start(redis_url, namespace)
    procs.append(proc)
    m = re.search(r"(http://127\.0\.0\.1:\d+/)#token=(\S+)", line)
    assert m, line
    base, token = m.groups()
    assert f"namespace {namespace}" in line
    with urllib.request.urlopen(base + "api/overview", timeout=10) as resp:
        assert json.load(resp)["namespace"] == namespace
    assert http_status(base + "api/dlq/purge", method="POST") == 401
    assert http_status(base + "api/dlq/purge", method="POST", token="wrong") == 403
    assert http_status(base + "api/dlq/purge", method="POST", token=token) == 200


def test_takes_the_token_from_the_environment_and_does_not_print_it(
    redis_url: str, namespace: str, procs: list[subprocess.Popen[str]]
) -> None:
    proc, line = _start(redis_url, namespace, env={"MEDIAPIPE_DASHBOARD_TOKEN": "from-env"})
    procs.append(proc)
    assert "from-env" not in line and "#token=<your token>" in line
    m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    assert m, line
    assert http_status(m.group(1) + "api/dlq/purge", method="POST", token="from-env") == 200


def test_an_unreachable_redis_exits_3_after_the_give_up_time(namespace: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", GROUP, "--redis", "redis://127.0.0.1:1/0", "dashboard"],
        cwd=ROOT,
        env={**os.environ, "MEDIAPIPE_REDIS_GIVE_UP": "0.5"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3, out.stderr
    assert out.stderr.startswith("mediapipe: ")


def test_a_busy_port_is_one_clear_line_and_exit_2(redis_url: str, namespace: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                GROUP,
                "--redis",
                redis_url,
                "--namespace",
                namespace,
                "dashboard",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
