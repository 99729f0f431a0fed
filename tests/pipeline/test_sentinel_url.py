"""The ``redis+sentinel://`` URL form (docs/sentinel.md): parsed, refused in one line when
malformed, and redacted wherever it is shown."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.connection import SentinelUrl, redacted, url_problem


def test_a_sentinel_url_names_the_sentinels_the_master_and_its_credentials() -> None:
    url = SentinelUrl.parse(
        "redis+sentinel://app:p%40ss@s1:26379,[::1]:26380/orders/2?sentinel_password=sp"
    )
    assert url.sentinels == (("s1", 26379), ("::1", 26380))
    assert (url.master, url.db, url.username, url.password) == ("orders", 2, "app", "p@ss")
    assert url.sentinel_password == "sp" and not url.tls
    assert SentinelUrl.parse("rediss+sentinel://s1:1/m").tls


@pytest.mark.parametrize(
    "bad",
    [
        "redis+sentinel://s1:26379",  # no master name
        "redis+sentinel://s1/mymaster",  # no port
        "redis+sentinel://s1:26379/mymaster/zero",
        "redis+sentinel:///mymaster",
    ],
)
def test_a_malformed_sentinel_url_is_refused_in_one_line(bad: str) -> None:
    problem = url_problem(bad)
    assert problem is not None and "Sentinel URL" in problem and "\n" not in problem
    env = {k: v for k, v in os.environ.items() if k != "MEDIAPIPE_REDIS_URL"}
    res = subprocess.run(
        [sys.executable, "-m", "mediajobs", "--redis", bad, "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_its_secrets_are_redacted() -> None:
    shown = redacted("redis+sentinel://app:hunter2@s1:1/m?sentinel_password=abc")
    assert "hunter2" not in shown and "abc" not in shown
