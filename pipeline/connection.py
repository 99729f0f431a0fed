"""Where Redis is: ``--redis-file PATH`` or ``MEDIAPIPE_REDIS_URL`` (``--redis URL`` works
too, but shows its password to anyone running ``ps``), else the embedded server.

URLs take the forms redis-py understands: ``redis://[user:pass@]host:port/db``,
``rediss://`` for TLS, and ``unix:///path/to/socket?db=0[&password=...]``. Anything
printed or logged about one goes through ``redacted``.
"""

from __future__ import annotations

import os
import re

import redis

from pipeline.errors import RedisUnavailableError, SubmissionError
from pipeline.server import EmbeddedServer

ENV_URL = "MEDIAPIPE_REDIS_URL"
URL_SCHEMES = ("redis://", "rediss://", "unix://")


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a Redis URL redis-py can use (secrets redacted), or None."""
    if url.startswith(URL_SCHEMES):
        return None
    return redacted(f"{url!r} is not a Redis URL: use redis://, rediss:// or unix://")


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
    problem = url_problem(resolved)
    if problem is not None:
        raise SubmissionError(problem)
    options: dict[str, object] = {"health_check_interval": 30}
    options.update(kwargs)
    client = redis.Redis.from_url(resolved, **options)
    if check:
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise RedisUnavailableError(
                redacted(f"Redis unreachable at {resolved}: {exc}")
            ) from exc
    return client


# user:password@, :password@ and token@ alike: whatever precedes the host's "@".
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#]*)@")
# password=, pwd=, token=, secret=, api_key=, auth=, X-Amz-Signature=... in a query or fragment.
_SECRET_PARAM = re.compile(
    r"(?P<lead>[?&;#])(?P<name>[^\s=&;#]*(?:pass|pwd|token|secret|key|auth|credential|sig)"
    r"[^\s=&;#]*)=(?P<value>[^\s&;#]*)",
    re.IGNORECASE,
)


def redacted(text: str) -> str:
    """``text`` (a URL, or a message that quotes some) with every secret in it hidden:
    the password of ``user:password@`` (the user stays, to tell accounts apart), a bare
    ``secret@``, and the values of query or fragment parameters that name a password,
    token, key or signature."""
    text = _USERINFO.sub(_hide_userinfo, text)
    return _SECRET_PARAM.sub(lambda m: f"{m['lead']}{m['name']}=***", text)


def _hide_userinfo(m: re.Match[str]) -> str:
    user, colon, _ = m["userinfo"].partition(":")
    return f"{m['scheme']}{user}:***@" if colon else f"{m['scheme']}***@"
