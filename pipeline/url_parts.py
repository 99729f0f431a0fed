"""The parts of a URL that names several servers (``scheme://[user:pass@]h1:p1,h2:p2/path``),
which urllib cannot split: the Sentinel and Cluster URLs of pipeline/connection.py and
pipeline/cluster.py."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote


@dataclass(frozen=True)
class MultiHostUrl:
    scheme: str
    hosts: str  # "h1:p1,h2:p2", as written (see host_ports)
    path: str
    query: str
    username: str | None
    password: str | None

    @classmethod
    def split(cls, url: str) -> MultiHostUrl:
        scheme, _, rest = url.partition("://")
        rest, _, query = rest.partition("?")
        userinfo, at, rest = rest.rpartition("@") if "@" in rest else ("", "", rest)
        hosts, _, path = rest.partition("/")
        user, colon, password = userinfo.partition(":") if at else ("", "", "")
        return cls(
            scheme=scheme,
            hosts=hosts,
            path=path,
            query=query,
            username=unquote(user) or None,
            password=unquote(password) if colon else None,
        )

    def host_ports(self, what: str) -> tuple[tuple[str, int], ...]:
        """``hosts`` as (host, port) pairs; ValueError naming ``what`` for one that is not
        host:port."""
        out = []
        for h in self.hosts.split(","):
            host, colon, port = h.rpartition(":")
            if not colon or not port.isdigit() or not host:
                raise ValueError(f"{what} {h!r} is not host:port")
            out.append((host.strip("[]"), int(port)))
        return tuple(out)
