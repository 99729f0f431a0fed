"""Webhooks end to end: real worker processes post to a real HTTP receiver on 127.0.0.1.

The receiver is ``http.server`` in a thread of the test; it records every request and
answers with the statuses the test scripts (200 by default). The signature is checked
with plain ``hmac`` as docs/webhooks.md tells a receiver to, not with mediapipe's code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

import stages.webhook  # noqa: F401  (registers the webhook stage in this process too)
from pipeline.client import Client
from pipeline.model import Backoff, BackoffKind, Dag
from pipeline.registry import REGISTRY, Registry
from tests.workers.conftest import Workers, wait_for

SECRET = "whsec-test-0123456789"


@dataclass
class Receiver:
    port: int
    statuses: list[int] = field(default_factory=list)  # answered in order, then 200
    requests: list[tuple[dict[str, str], bytes, float]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/mediapipe"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.requests.append((dict(self.headers.items()), body, time.monotonic()))
                status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def hook_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("MEDIAPIPE_HOME", str(tmp_path / "mh"))
    monkeypatch.setenv("MEDIAPIPE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("MEDIAPIPE_WEBHOOK_ALLOW", "127.0.0.1")
    monkeypatch.setenv("MEDIAPIPE_WEBHOOK_TIMEOUT", "3")
    return monkeypatch


def _client(r: redis.Redis, namespace: str, attempts: int, backoff: float) -> Client:
    """A client whose webhook deliveries retry fast (the options travel with the job)."""
    registry = Registry()
    for name in REGISTRY:
        registry.add(REGISTRY.get(name))
    fast = Backoff(BackoffKind.FIXED, base=backoff, cap=backoff, jitter=0.0)
    registry.add(replace(REGISTRY.get("webhook"), attempts=attempts, backoff=fast))
    return Client(r, namespace=namespace, registry=registry)


def _verified(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """A receiver's check, as docs/webhooks.md writes it."""
    parts = dict(p.split("=", 1) for p in headers["Mediapipe-Signature"].split(",") if "=" in p)
    signed = f"{parts['t']}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(parts["t"])) <= tolerance
    return fresh and hmac.compare_digest(expected, parts["v1"])


def _submit(client: Client, url: str | None, stage: str = "t.echo", **params: Any) -> Dag:
    dag = Dag(webhook=url, meta={"input": "clip.mp4"})
    dag.add("root", stage, params)
    client.submit(dag)
    return dag


def _event_id(client: Client, dag: Dag) -> str:
    return str(
        wait_for(
            lambda: client.redis.hget(client.keys.dag(dag.id), "webhook_event"),
            20,
            f"DAG {dag.id} to close",
        ).decode()
    )


def _ended(client: Client, dag_id: str, timeout: float = 30) -> str:
    return str(
        wait_for(
            lambda: s if (s := client.dag_state(dag_id)) not in (None, "running") else None,
            timeout,
            f"DAG {dag_id} to end",
        )
    )


def test_a_completed_dag_is_posted_once_signed_with_its_results(
    workers: Workers, r: redis.Redis, namespace: str, receiver: Receiver, hook_env: Any
) -> None:
    client = _client(r, namespace, attempts=3, backoff=0.5)
    workers.spawn("--concurrency", "2")
    dag = _submit(client, receiver.url, x=1)
    event = _event_id(client, dag)
    assert _ended(client, event) == "completed"
    time.sleep(0.5)  # a second delivery would arrive now
    assert len(receiver.requests) == 1
    headers, body, _ = receiver.requests[0]
    assert _verified(SECRET, headers, body)
    assert not _verified("another secret", headers, body)
    assert not _verified(SECRET, headers, body.replace(b"completed", b"failed"))
    assert headers["Mediapipe-Event-Id"] == event
    assert headers["Mediapipe-Event"] == "dag.completed"
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["id"] == event and doc["type"] == "dag.completed"
    assert doc["dag"]["id"] == dag.id and doc["dag"]["completed"] == 1
    assert doc["dag"]["meta"]["input"] == "clip.mp4"
    assert doc["results"]["root"]["params"] == {"x": 1}
    delivery = client.job(f"{event}/deliver")
    assert delivery is not None and delivery["result"]["status"] == 200


def test_a_500_is_retried_later_while_the_worker_slot_runs_other_jobs(
    workers: Workers, r: redis.Redis, namespace: str, receiver: Receiver, hook_env: Any
) -> None:
    receiver.statuses = [500]
    client = _client(r, namespace, attempts=3, backoff=3.0)
    workers.spawn("--concurrency", "1")  # one slot: a delivery waiting in it would block B
    a = _submit(client, receiver.url)
    event = _event_id(client, a)
    job_id = f"{event}/deliver"
    wait_for(lambda: len(receiver.requests) == 1, 20, "the first delivery")
    wait_for(lambda: (client.job(job_id) or {}).get("state") == "delayed", 5, "the retry wait")
    first_at = receiver.requests[0][2]

    b = _submit(client, None)
    assert _ended(client, b.id, 10) == "completed"
    # B ran in the only slot while the delivery waited for its retry in the delayed set.
    assert (client.job(job_id) or {}).get("state") == "delayed"
    assert len(receiver.requests) == 1

    assert _ended(client, event) == "completed"
    assert len(receiver.requests) == 2
    (h1, b1, _), (h2, b2, second_at) = receiver.requests
    assert second_at - first_at >= 2.8  # the backoff, not an immediate retry
    assert h1["Mediapipe-Event-Id"] == h2["Mediapipe-Event-Id"] == event  # one event
    assert (h1["Mediapipe-Delivery-Attempt"], h2["Mediapipe-Delivery-Attempt"]) == ("1", "2")
    assert _verified(SECRET, h1, b1) and _verified(SECRET, h2, b2)


def test_a_receiver_that_stays_down_dead_letters_the_event_and_opens_its_breaker(
    workers: Workers, r: redis.Redis, namespace: str, receiver: Receiver, hook_env: Any
) -> None:
    receiver.statuses = [500] * 10
    client = _client(r, namespace, attempts=3, backoff=0.2)
    workers.spawn("--concurrency", "1")
    dag = _submit(client, receiver.url)
    event = _event_id(client, dag)
    assert _ended(client, event) == "failed"
    assert client.dag_state(dag.id) == "completed"  # the DAG itself is not touched
    dead = client.dead()
    assert [d["id"] for d in dead] == [f"{event}/deliver"]
    assert dead[0]["attempts"] == 3 and len(receiver.requests) == 3
    assert dead[0]["error"]["type"] == "ServiceFailedError"
    assert "answered 500" in dead[0]["error"]["message"]
    breaker = r.hgetall(client.keys.breaker(f"webhook:127.0.0.1:{receiver.port}"))
    assert breaker[b"state"] == b"open"


def test_a_loopback_receiver_is_refused_without_the_allow_list(
    workers: Workers, r: redis.Redis, namespace: str, receiver: Receiver, hook_env: Any
) -> None:
    hook_env.delenv("MEDIAPIPE_WEBHOOK_ALLOW")
    client = _client(r, namespace, attempts=3, backoff=0.2)
    workers.spawn("--concurrency", "1")
    dag = _submit(client, receiver.url)
    event = _event_id(client, dag)
    assert _ended(client, event) == "failed"
    (dead,) = client.dead()
    assert dead["id"] == f"{event}/deliver" and dead["attempts"] == 1  # not retried
    assert dead["error"]["type"] == "OutboundRefusedError"
    message = dead["error"]["message"]
    assert "127.0.0.1 is loopback" in message and "MEDIAPIPE_WEBHOOK_ALLOW" in message
    assert receiver.requests == []
