"""Secrets stay out of what the command prints and out of argv: Redis URLs are redacted in
every form, and the Redis URL and the dashboard token can come from a file (or the
environment) instead of the command line, where any local user reads them with ps."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.connection import redacted
from tests.cli.conftest import FIXTURES, ROOT, Cli
from tests.helpers import http_status

SECRET = "hunter2-0123456789"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize(
    "url",
    [
        f"redis://mp:{SECRET}@127.0.0.1:1/0",
        f"redis://:{SECRET}@127.0.0.1:1/0",
        f"redis://{SECRET}@127.0.0.1:1/0",
        f"redis://127.0.0.1:1/0?password={SECRET}",
        f"rediss://127.0.0.1:1/0?ssl_cert_reqs=none&password={SECRET}",
        f"unix:///nonexistent/redis.sock?db=0&password={SECRET}",
    ],
)
def test_an_unreachable_redis_is_named_without_its_password(cli: Cli, url: str) -> None:
    cli.env["MEDIAPIPE_REDIS_URL"] = url
    for args in (["status"], ["submit", str(FIXTURES / "large.jpg"), "--out", "out"]):
        out = cli.run(*args, timeout=60)
        assert out.returncode == 3, out.stdout + out.stderr
        assert out.stderr.startswith("mediapipe: ")
        assert SECRET not in out.stdout + out.stderr, out.stderr
        assert "***" in out.stderr


def test_redaction_hides_passwords_and_tokens_but_keeps_the_rest() -> None:
    assert redacted("rediss://mp:pw@host:6380/1") == "rediss://mp:***@host:6380/1"
    assert redacted("redis://:pw@host/0") == "redis://:***@host/0"
    assert redacted("redis://host/0?db=1&password=pw") == "redis://host/0?db=1&password=***"
    assert redacted("unix:///tmp/r.sock?db=0") == "unix:///tmp/r.sock?db=0"
    assert (
        redacted("http://s3/b/k?X-Amz-Signature=abc&x=1") == "http://s3/b/k?X-Amz-Signature=***&x=1"
    )
    assert (
        redacted("failed at http://h/#token=abc and redis://u:p@h:1")
        == "failed at http://h/#token=*** and redis://u:***@h:1"
    )


def test_the_redis_url_can_come_from_a_file(fleet_cli: Cli, redis_url: str, namespace: str) -> None:
    secret = fleet_cli.cwd / "redis-url"
    secret.write_text(redis_url + "\n")
    secret.chmod(0o600)
    del fleet_cli.env["MEDIAPIPE_REDIS_URL"]

    out = fleet_cli.run("--redis-file", str(secret), "--namespace", namespace, "status")
    assert out.returncode == 0, out.stderr
    assert f"Redis: {redacted(redis_url)}" in out.stdout

    fleet_cli.env["MEDIAPIPE_REDIS_URL_FILE"] = str(secret)
    out = fleet_cli.run("--namespace", namespace, "status")
    assert out.returncode == 0, out.stderr
    assert f"Redis: {redacted(redis_url)}" in out.stdout


def test_a_password_typed_on_the_command_line_gets_a_warning(cli: Cli) -> None:
    out = cli.run("--redis", f"redis://:{SECRET}@127.0.0.1:1/0", "status", timeout=60)
    assert out.returncode == 3
    assert "warning: a password on the command line shows in ps" in out.stderr
    assert "MEDIAPIPE_REDIS_URL" in out.stderr and SECRET not in out.stderr


def test_the_dashboard_token_can_come_from_a_file_and_stays_out_of_argv_and_output(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    secret = tmp_path / "dashboard-token"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    env = {**os.environ, "MEDIAPIPE_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    env.pop("MEDIAPIPE_DASHBOARD_TOKEN", None)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mediajobs", "--namespace", namespace, "dashboard"),
            *("--port", "0", "--token-file", str(secret)),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)#token=<your token>", line)
        assert m, line
        assert SECRET not in Path(f"/proc/{proc.pid}/cmdline").read_text()
        assert http_status(m.group(1) + "api/dlq/purge", method="POST", token="wrong") == 403
        assert http_status(m.group(1) + "api/dlq/purge", method="POST", token=SECRET) == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert SECRET not in line + err


def test_the_docs_examples_do_not_put_secrets_on_the_command_line() -> None:
    for doc in DOCS:
        examples = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", doc.read_text(), re.DOTALL))
        assert not re.search(r"--token[ =]", examples), f"{doc.name}: --token VALUE"
        password = re.search(r"--redis[ =]\S*://[^\s/@]*@", examples)
        assert not password, f"{doc.name}: --redis with a password"
