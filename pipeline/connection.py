"""Where Redis is: ``--redis-file PATH`` or ``MEDIAPIPE_REDIS_URL`` (``--redis URL`` works
too, but shows its password to anyone running ``ps``), else the embedded server.

URLs take the forms redis-py understands: ``redis://[user:pass@]host:port/db``,
``rediss://`` for TLS, and ``unix:///path/to/socket?db=0[&password=...]``; and, for a
master that Sentinel watches and fails over,
``redis+sentinel://[user:pass@]host:port[,host:port...]/<master name>[/db]`` (the
password is the master's; ``?sentinel_password=`` for sentinels that have their own,
``rediss+sentinel://`` for TLS to both). Every client then asks the sentinels where the
master is on each (re)connection, so after a failover it finds the new one by itself.
For a Redis or Valkey Cluster, ``redis+cluster://[user:pass@]host:port[,host:port...]``
(``rediss+cluster://`` for TLS): a namespace is one hash slot, and its clients follow
that slot's master (pipeline/cluster.py).
Anything printed or logged about one goes through ``redacted``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import redis
from redis.sentinel import Sentinel

from pipeline.cluster import CLUSTER_SCHEMES, ClusterUrl
from pipeline.errors import RedisUnavailableError, SubmissionError
from pipeline.server import EmbeddedServer
from pipeline.url_parts import MultiHostUrl

ENV_URL = "MEDIAPIPE_REDIS_URL"
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
URL_SCHEMES = ("redis://", "rediss://", "unix://", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)


@dataclass(frozen=True)
class SentinelUrl:
    """``redis+sentinel://[user:pass@]h1:p1,h2:p2/<master>[/db][?sentinel_password=...]``"""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        u = MultiHostUrl.split(url)
        parts = [p for p in u.path.split("/") if p]
        if not u.hosts or not parts or len(parts) > 2 or not (len(parts) < 2 or parts[1].isdigit()):
            raise ValueError("needs host:port[,host:port...]/<master name>[/db]")
        q = parse_qs(u.query)
        return cls(
            sentinels=u.host_ports("sentinel"),
            master=unquote(parts[0]),
            db=int(parts[1]) if len(parts) == 2 else 0,
            username=u.username,
            password=u.password,
            sentinel_password=q["sentinel_password"][0] if "sentinel_password" in q else None,
            tls=u.scheme == "rediss+sentinel",
        )

    def client(self, **options: Any) -> redis.Redis:
        """A client for the master; each new connection asks the sentinels where it is."""
        common = {k: v for k, v in options.items() if k.startswith("socket_")}
        if self.tls:
            options = {"ssl": True, **options}
            common = {"ssl": True, **common}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(self.sentinels),
            sentinel_kwargs={"password": self.sentinel_password, **common},
            **options,
        )
        master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            self.master, db=self.db, username=self.username, password=self.password
        )
        return master


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a Redis URL redis-py can use (secrets redacted), or None."""
    for schemes, parse, kind in (
        (SENTINEL_SCHEMES, SentinelUrl.parse, "Sentinel"),
        (CLUSTER_SCHEMES, ClusterUrl.parse, "Cluster"),
    ):
        if url.startswith(schemes):
            try:
                parse(url)
            except ValueError as exc:
                return redacted(f"{url!r} is not a {kind} URL: {exc}")
            return None
    if url.startswith(URL_SCHEMES):
        return None
    return redacted(
        f"{url!r} is not a Redis URL: use redis://, rediss://, unix://, redis+sentinel:// or "
        "redis+cluster://"
    )


def client_from_url(url: str, *, namespace: str = "mp", **options: Any) -> redis.Redis:
    """``redis.Redis.from_url`` that also takes a ``redis+sentinel://`` URL and a
    ``redis+cluster://`` one (whose client serves ``namespace``: its slot's master)."""
    if url.startswith(CLUSTER_SCHEMES):
        return ClusterUrl.parse(url).client(namespace, **options)
    if url.startswith(SENTINEL_SCHEMES):
        return SentinelUrl.parse(url).client(**options)
    return redis.Redis.from_url(url, **options)


def resolve_url(url: str | None = None, *, start_embedded: bool = True) -> str:
    url = url or os.environ.get(ENV_URL)
    if url:
        return url
    server = EmbeddedServer.default()
    if start_embedded:
        server.ensure_running()
    return server.url


def connect(
    url: str | None = None, *, check: bool = True, namespace: str = "mp", **kwargs: object
) -> redis.Redis:
    """A client for the configured Redis; raises RedisUnavailableError when unreachable."""
    resolved = resolve_url(url)
    problem = url_problem(resolved)
    if problem is not None:
        raise SubmissionError(problem)
    options: dict[str, object] = {"health_check_interval": 30}
    options.update(kwargs)
    client = client_from_url(resolved, namespace=namespace, **options)
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
