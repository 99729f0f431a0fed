"""Dashboard fixtures: the app served on a free localhost port from a thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from werkzeug.serving import BaseWSGIServer

from mediajobs.dashboard.app import create_app, make_dashboard_server
from pipeline.client import Client

TOKEN = "test-token-0123456789"


@dataclass(frozen=True)
class Served:
    url: str  # http://127.0.0.1:PORT
    token: str


@pytest.fixture
def serve() -> Iterator[Callable[[Client], Served]]:
    servers: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(client: Client) -> Served:
        server = make_dashboard_server(create_app(client, token=TOKEN), "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return Served(f"http://127.0.0.1:{server.port}", TOKEN)

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)
