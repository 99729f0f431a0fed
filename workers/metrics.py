"""Prometheus metrics and health endpoints of a worker node.

Only the worker's parent process records metrics: it sees every job start, finish, fail
and deferral, so the pool children (which may be killed at any moment) need no
multiprocess collector and nothing is counted twice or lost with a child.

Endpoints (bound to 127.0.0.1 unless told otherwise):
- ``/metrics``: Prometheus text format;
- ``/healthz``: 200 when the process is up and Redis answers a PING;
- ``/readyz``: 200 while the node is taking jobs (not stopping, Redis reachable).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

DURATION_BUCKETS = (0.005, 0.05, 0.25, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        labels = ("stage", "queue")
        self.started = Counter(
            "mediapipe_jobs_started", "Jobs handed to a pool process", labels, registry=r
        )
        self.completed = Counter(
            "mediapipe_jobs_completed", "Jobs that completed", labels, registry=r
        )
        self.failed = Counter(
            "mediapipe_jobs_failed", "Job failures (any outcome)", labels, registry=r
        )
        self.retried = Counter(
            "mediapipe_jobs_retried", "Failures that will be retried", labels, registry=r
        )
        self.dead = Counter(
            "mediapipe_jobs_dead", "Jobs moved to the dead-letter queue", labels, registry=r
        )
        self.deferred = Counter(
            "mediapipe_jobs_deferred",
            "Jobs deferred because a service they need was down",
            labels,
            registry=r,
        )
        self.duration = Histogram(
            "mediapipe_job_duration_seconds",
            "Run time of jobs in pool processes",
            labels,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.bytes_out = Counter(
            "mediapipe_output_bytes",
            "Bytes of outputs written by completed jobs",
            ("stage",),
            registry=r,
        )
        self.capacity = Gauge("mediapipe_worker_capacity", "Capacity in slots", registry=r)
        self.in_use = Gauge("mediapipe_worker_slots_in_use", "Slots in use", registry=r)
        self.capacity_changes = Counter(
            "mediapipe_worker_capacity_changes",
            "Adaptive concurrency changes",
            ("direction",),
            registry=r,
        )
        self.queue_depth = Gauge(
            "mediapipe_queue_jobs", "Jobs in a queue by state", ("queue", "state"), registry=r
        )
        self.breaker = Gauge(
            "mediapipe_breaker_state",
            "Circuit breaker state (0 closed, 1 half-open, 2 open)",
            ("service",),
            registry=r,
        )
        self.ffmpeg_speed = Gauge(
            "mediapipe_ffmpeg_speed",
            "Last reported transcode speed (x real time)",
            ("stage",),
            registry=r,
        )

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


def output_bytes(result_json: str) -> int:
    """Total ``bytes`` of the outputs a stage reported (renditions, poster, ...)."""
    import json

    try:
        result = json.loads(result_json)
    except ValueError:
        return 0
    total = 0
    if isinstance(result, dict):
        for value in result.values():
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("bytes"), int):
                    total += item["bytes"]
    return total


class HealthServer:
    """A small HTTP server in a thread: metrics, liveness and readiness."""

    def __init__(
        self,
        metrics: NodeMetrics,
        *,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    outer._reply(self, 200, metrics.render(), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok = healthy()
                    outer._reply(self, 200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
                elif self.path == "/readyz":
                    ok = ready()
                    outer._reply(self, 200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    outer._reply(self, 404, b"not found\n")

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds would flood the worker's log

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, daemon=True, name="health-http"
        )

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler,
        code: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
