"""The webhook stage's pieces: the outbound URL policy, the pinned connection, the
answers it retries or refuses, the bounded body, and the signature a receiver checks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipeline.errors import PermanentError, ServiceFailedError
from pipeline.webhooks import signature, verify
from stages.outbound import OutboundPolicy, OutboundRefusedError, Target
from stages.webhook import MAX_BODY, build_event, encode_body, post

PUBLIC = "93.184.215.14"


def _resolver(*addresses: str) -> Any:
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return list(addresses)

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(
    ("address", "what"),
    [
        ("127.0.0.1", "loopback"),
        ("10.2.3.4", "private"),
        ("192.168.1.10", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("fd00:ec2::254", "private"),  # AWS' IPv6 metadata address
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 address
        ("224.0.0.1", "multicast"),
    ],
)
def test_an_address_that_is_not_public_is_refused_by_default(address: str, what: str) -> None:
    with pytest.raises(OutboundRefusedError, match=what) as err:
        OutboundPolicy().check("https://hooks.example.com/x", _resolver(address))
    assert "MEDIAPIPE_WEBHOOK_ALLOW=hooks.example.com" in str(err.value)


def test_a_public_address_is_allowed_and_is_the_one_connected_to() -> None:
    resolve = _resolver(PUBLIC)
    target = OutboundPolicy().check("https://Hooks.Example.com/a/b?token=1", resolve)
    assert target == Target("https", "hooks.example.com", 443, PUBLIC, "/a/b?token=1")
    assert resolve.calls == ["hooks.example.com"]  # resolved once


def test_from_a_mixed_answer_only_an_allowed_address_is_used() -> None:
    target = OutboundPolicy().check("http://h.example.com:8080/", _resolver("10.0.0.1", PUBLIC))
    assert (target.address, target.port) == (PUBLIC, 8080)


def test_the_allow_list_takes_hosts_addresses_and_networks() -> None:
    policy = OutboundPolicy.parse("hooks.internal, 10.1.0.0/16 127.0.0.1")
    assert policy.check("http://hooks.internal/", _resolver("10.9.9.9")).address == "10.9.9.9"
    assert policy.check("http://x.example/", _resolver("10.1.2.3")).address == "10.1.2.3"
    assert policy.check("http://127.0.0.1:9/", _resolver("127.0.0.1")).address == "127.0.0.1"
    with pytest.raises(OutboundRefusedError, match=r"10\.2\.0\.1 is private"):
        policy.check("http://x.example/", _resolver("10.2.0.1"))


def test_public_off_leaves_only_the_allow_list() -> None:
    policy = OutboundPolicy.from_env(
        {"MEDIAPIPE_WEBHOOK_ALLOW": "hooks.example.com", "MEDIAPIPE_WEBHOOK_PUBLIC": "0"}
    )
    assert policy.check("https://hooks.example.com/", _resolver(PUBLIC)).address == PUBLIC
    with pytest.raises(OutboundRefusedError, match="not in MEDIAPIPE_WEBHOOK_ALLOW"):
        policy.check("https://other.example.com/", _resolver(PUBLIC))


def test_only_http_and_https_are_followed() -> None:
    with pytest.raises(OutboundRefusedError, match="only http and https"):
        OutboundPolicy().check("ftp://example.com/x", _resolver(PUBLIC))


def test_a_name_that_does_not_resolve_is_retried_not_refused() -> None:
    def fails(host: str, port: int) -> list[str]:
        raise socket.gaierror(-2, "Name or service not known")

    with pytest.raises(ServiceFailedError, match="does not resolve"):
        OutboundPolicy().check("https://nowhere.example/", fails)


@pytest.fixture
def server() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"status": 200, "location": None, "seen": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state["seen"].append(self.headers.get("Host"))
            self.send_response(state["status"])
            if state["location"]:
                self.send_header("Location", state["location"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["port"] = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _target(port: int, host: str = "hooks.invalid") -> Target:
    return Target("http", host, port, "127.0.0.1", "/hook")


def test_the_post_goes_to_the_checked_address_under_the_hosts_name(
    server: dict[str, Any],
) -> None:
    # hooks.invalid resolves nowhere: only the pinned address can have been used.
    assert post(_target(server["port"]), b"{}", {}, 2.0) == 200
    assert server["seen"] == [f"hooks.invalid:{server['port']}"]


def test_a_redirect_is_not_followed(server: dict[str, Any]) -> None:
    other: list[bytes] = []
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(1)
    server["status"], server["location"] = 302, f"http://127.0.0.1:{sink.getsockname()[1]}/"
    try:
        with pytest.raises(PermanentError, match="redirects are not followed"):
            post(_target(server["port"]), b"{}", {}, 2.0)
        sink.settimeout(0.2)
        with pytest.raises(TimeoutError):
            other.append(sink.accept()[0].recv(10))
    finally:
        sink.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, ServiceFailedError),
        (503, ServiceFailedError),
        (429, ServiceFailedError),
        (404, PermanentError),
        (401, PermanentError),
    ],
)
def test_server_errors_are_retried_and_refusals_are_not(
    server: dict[str, Any], status: int, error: type[Exception]
) -> None:
    server["status"] = status
    with pytest.raises(error, match=str(status)):
        post(_target(server["port"]), b"{}", {}, 2.0)


@pytest.mark.serial  # alone under xdist: a 0.5 s timeout must end the post < 3 s
def test_a_receiver_that_never_answers_times_out_quickly() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection in its backlog, never answers
    try:
        t0 = time.monotonic()
        with pytest.raises(ServiceFailedError, match="timed out"):
            post(_target(silent.getsockname()[1]), b"{}", {}, 0.5)
        assert time.monotonic() - t0 < 3
    finally:
        silent.close()


def test_a_refused_connection_is_retried() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ServiceFailedError):
        post(_target(port), b"{}", {}, 1.0)


def _params(**dag: Any) -> dict[str, Any]:
    counts = {"total": 2, "dead": 0, "upstream_failed": 0, "cancelled": 0, **dag}
    event = {"id": "wh-1-2", "type": "dag.completed", "created": 1_700_000_000_000}
    return {"event": {**event, "dag": {"id": "d1", **counts}}, "meta": '{"input":"a.mp4"}'}


def test_the_event_carries_the_manifest_and_is_bounded() -> None:
    manifest = {"path": "/out/a/manifest.json", "bytes": 10, "sha256": "ab"}
    inputs = {"manifest": {"manifest": manifest, "outputs": [{"path": "x" * 100}] * 2000}}
    event = build_event(
        _params(), inputs, {"probe": {"type": "E", "message": "m", "traceback": "t"}}
    )
    assert event["manifest"] == manifest and event["dag"]["completed"] == 2
    assert event["errors"] == {"probe": {"type": "E", "message": "m"}}  # no traceback
    body = encode_body(event)
    assert len(body) <= MAX_BODY
    assert b'"truncated":true' in body and b"/out/a/manifest.json" in body
    small = encode_body(build_event(_params(), {"r": {"ok": 1}}, {}))
    assert b'"truncated":false' in small and b'"results":{"r":{"ok":1}}' in small


def test_a_signature_verifies_only_fresh_and_untouched() -> None:
    body = b'{"id":"wh-1-2"}'
    header = signature(["s3cret"], body, t=1_700_000_000)
    assert verify("s3cret", header, body, now=1_700_000_100)
    assert not verify("s3cret", header, body + b" ", now=1_700_000_100)
    assert not verify("other", header, body, now=1_700_000_100)
    assert not verify("s3cret", header, body, now=1_700_000_000 + 301)  # a late replay
    rotating = signature(["new", "old"], body, t=1_700_000_000)
    assert verify("old", rotating, body, now=1_700_000_000)
    assert verify("new", rotating, body, now=1_700_000_000)
