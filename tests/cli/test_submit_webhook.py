"""`mediapipe submit --webhook URL`, as a user runs it: the embedded mode's local pool
posts the signed event with the manifest's location before the command returns."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import FIXTURES, Cli

SECRET = "whsec-cli-test"


@pytest.fixture
def received() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()
    server.server_close()


def test_submit_posts_the_signed_event_with_the_manifest(
    cli: Cli, tmp_path: Path, received: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, got = received
    cli.env.update(MEDIAPIPE_WEBHOOK_SECRET=SECRET, MEDIAPIPE_WEBHOOK_ALLOW="127.0.0.1")
    out = tmp_path / "out"
    res = cli.run(
        "submit", str(FIXTURES / "cmyk.jpg"), "--out", str(out), "--json", "--webhook", url
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert len(got) == 1, res.stderr
    headers, body = got[0]
    t, v1 = (p.split("=", 1)[1] for p in headers["Mediapipe-Signature"].split(","))
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, v1)
    event = json.loads(body)
    assert event["type"] == "dag.completed" and event["dag"]["id"] == doc["dag_id"]
    assert event["manifest"]["path"] == doc["manifest"]
    assert Path(event["manifest"]["path"]).is_file()


def test_a_webhook_the_policy_refuses_is_one_line_and_the_renditions_still_finish(
    cli: Cli, tmp_path: Path, received: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, got = received
    cli.env.update(MEDIAPIPE_WEBHOOK_SECRET=SECRET)  # 127.0.0.1 not allowed
    res = cli.run(
        "submit", str(FIXTURES / "cmyk.jpg"), "--out", str(tmp_path / "o"), "--webhook", url
    )
    assert res.returncode == 0, res.stderr  # the renditions are done; the event is not
    lines = [line for line in res.stderr.splitlines() if "webhook" in line]
    assert len(lines) == 1 and "127.0.0.1 is loopback" in lines[0], res.stderr
    assert "dlq" in lines[0]
    assert got == []


def test_a_bad_webhook_url_is_refused_before_anything_runs(cli: Cli, tmp_path: Path) -> None:
    res = cli.run("submit", str(FIXTURES / "cmyk.jpg"), "--webhook", "ftp://example.com/x")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "http and https" in res.stderr
    assert not (tmp_path / "mediapipe-out").exists()
