"""Where Redis is: ``--redis URL``, else ``MEDIAPIPE_REDIS_URL``, else the embedded server.

URLs take the forms redis-py understands: ``redis://[user:pass@]host:port/db``,
``rediss://`` for TLS, and ``unix:///path/to/socket?db=0``.
"""

from __future__ import annotations

import os

import redis

from pipeline.errors import RedisUnavailableError
from pipeline.server import EmbeddedServer

ENV_URL = "MEDIAPIPE_REDIS_URL"


def resolve_url(url: str | None = None, *, start_embedded: bool = True) -> str:
    url = url or os.environ.get(ENV_URL)
    if url:
        return url
    server = EmbeddedServer.default()
    if start_embedded:
        server.ensure_running()
    return server.url


def connect(url: str | None = None, *, check: bool = True, **kwargs: object) -> redis.Redis:
    """A client for the configured Redis; raises RedisUnavailableError when unreachable."""
    resolved = resolve_url(url)
    options: dict[str, object] = {"health_check_interval": 30}
    options.update(kwargs)
    client = redis.Redis.from_url(resolved, **options)
    if check:
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise RedisUnavailableError(
                f"Redis unreachable at {redacted(resolved)}: {exc}"
            ) from exc
    return client


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
