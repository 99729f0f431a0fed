"""Where a worker may connect when a submitter names a URL: the outbound URL policy.

A URL in a job (a webhook today) comes from whoever submits, and the worker that
follows it sits inside the operator's network, next to Redis, the cloud's metadata
service and other private hosts. So, before anything is sent:

- only ``http`` and ``https``;
- the host is resolved once, here; each address must be public (not private, loopback,
  link-local such as the metadata address 169.254.169.254, carrier-grade NAT, multicast,
  reserved or unspecified; an IPv4 address mapped into IPv6 is judged as the IPv4 one),
  unless the operator allows it: ``MEDIAPIPE_WEBHOOK_ALLOW`` lists host names, addresses
  and CIDRs (comma or space separated), e.g. ``hooks.internal,10.1.0.0/16,127.0.0.1``;
- ``MEDIAPIPE_WEBHOOK_PUBLIC=0`` narrows it to the allowed list alone;
- the connection goes to the address that was checked (``Target.address``), never to a
  second resolution of the name, so a DNS answer that changes between the check and the
  connection (DNS rebinding) cannot steer it; HTTPS still verifies the certificate
  against the host name.

A refusal is a ``OutboundRefusedError`` (permanent: the job goes to the dead-letter
queue with the reason and how to allow it); a name that does not resolve may resolve
later, so it is a ``ServiceFailedError`` (retried).
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.errors import PermanentError, ServiceFailedError

ALLOW_ENV = "MEDIAPIPE_WEBHOOK_ALLOW"
PUBLIC_ENV = "MEDIAPIPE_WEBHOOK_PUBLIC"
SCHEMES = {"http": 80, "https": 443}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


class OutboundRefusedError(PermanentError):
    """The policy refuses this URL (scheme, or an address the operator did not allow)."""


@dataclass(frozen=True)
class Target:
    """A URL checked by the policy: connect to ``address``, speak to ``host``."""

    scheme: str
    host: str
    port: int
    address: str
    path: str  # path and query, as sent on the request line


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _address(text: str) -> Address:
    ip = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone id is not ours to keep
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def why_not_public(ip: Address) -> str | None:
    """None for an address anyone may reach on the internet; else what it is."""
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local (the cloud metadata service lives there)", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    )
    for what, hit in checks:
        if hit:
            return what
    return None if ip.is_global else "not globally routable"


@dataclass(frozen=True)
class OutboundPolicy:
    hosts: frozenset[str] = frozenset()  # lower-case host names allowed whatever they resolve to
    networks: tuple[Network, ...] = ()
    public: bool = True  # public addresses need no listing

    allow_env: str = ALLOW_ENV  # named in refusals: where the operator lists exceptions

    @classmethod
    def from_env(
        cls,
        env: dict[str, str] | None = None,
        *,
        allow_env: str = ALLOW_ENV,
        public_env: str = PUBLIC_ENV,
    ) -> OutboundPolicy:
        """The policy the operator set in ``allow_env`` and ``public_env`` (the webhook
        variables by default; inputs named by URL have their own)."""
        env = dict(os.environ) if env is None else env
        policy = cls.parse(env.get(allow_env, ""), public=env.get(public_env, "1") != "0")
        return OutboundPolicy(policy.hosts, policy.networks, policy.public, allow_env)

    @classmethod
    def parse(cls, allow: str, *, public: bool = True) -> OutboundPolicy:
        hosts: set[str] = set()
        networks: list[Network] = []
        for item in (i for i in re.split(r"[\s,]+", allow) if i):
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks), public)

    def allows(self, host: str, ip: Address) -> str | None:
        """None when ``host`` at ``ip`` may be reached; else why not."""
        # (an IPv4 address is "in" ::/0 for ipaddress: compare versions first)
        if host in self.hosts or any(ip.version == n.version and ip in n for n in self.networks):
            return None
        reason = why_not_public(ip)
        if reason is None and self.public:
            return None
        return reason or f"not in {self.allow_env}"

    def check(self, url: str, resolver: Resolver = resolve) -> Target:
        """The address to connect to for ``url``: the first one the host resolves to that
        the policy allows. OutboundRefusedError when none is (naming the address, why,
        and how to allow it); ServiceFailedError when the name does not resolve now."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise OutboundRefusedError(f"{shown_url(url)}: only http and https URLs are followed")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise OutboundRefusedError(f"{shown_url(url)}: no host")
        port = parts.port or SCHEMES[scheme]
        try:
            candidates = resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise ServiceFailedError(f"{host} does not resolve now ({exc})") from None
        refused: list[str] = []
        for text in candidates:
            try:
                ip = _address(text)
            except ValueError:
                continue
            reason = self.allows(host, ip)
            if reason is None:
                path = parts.path or "/"
                return Target(
                    scheme, host, port, str(ip), path + (f"?{parts.query}" if parts.query else "")
                )
            refused.append(f"{ip} is {reason}")
        if not refused:
            raise ServiceFailedError(f"{host} resolved to no address")
        raise OutboundRefusedError(
            f"{shown_url(url)} refused: {'; '.join(refused)}. To allow it, list the host or "
            f"its address or network in {self.allow_env} on the workers (e.g. "
            f"{self.allow_env}={_suggest(host, candidates)})"
        )


def _suggest(host: str, addresses: Iterable[str]) -> str:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host.strip("[]")
    except ValueError:
        return host if host else next(iter(addresses), "")


def shown_url(url: str) -> str:
    """The URL for messages: without its query (which may carry a token) and with any
    password in it as ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:***@{netloc.rpartition('@')[2]}"
    return f"{parts.scheme}://{netloc}{parts.path}"


class PinnedHTTP(http.client.HTTPConnection):
    """HTTP to ``address``, with ``host`` in the Host header."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to ``address``; SNI and the certificate check use ``host``."""

    def __init__(self, target: Target, timeout: float) -> None:
        self._ctx = ssl.create_default_context()
        super().__init__(target.host, target.port, timeout=timeout, context=self._ctx)
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


def pinned_connection(target: Target, timeout: float) -> http.client.HTTPConnection:
    """An HTTP(S) connection to the address the policy checked, never a second lookup."""
    cls = PinnedHTTPS if target.scheme == "https" else PinnedHTTP
    return cls(target, timeout)
