"""Webhooks: the event a DAG's end sends, its signature, and the URL a submit may name.

A DAG submitted with a webhook (``Dag(webhook=URL)``, ``mediapipe submit --webhook``)
keeps, in its hash, the JSON ``encode_spec`` makes (the URL, the breaker it counts
against, the roots whose results the event carries and the delivery job's options). The
Lua transition that closes the DAG (``settle_dag`` in scripts/includes/common.lua) reads
it in the HMGET it does anyway and, in the same atomic call, creates a one-job DAG whose
job (stage ``webhook``, stages/webhook.py) posts the event: an ordinary job, so it
retries with backoff in the delayed set (no worker slot waits), ends in the dead-letter
queue, and passes through the per-host circuit breaker (``service`` in its params). The
delivery DAG's id is the event's id, new on every close.

The body is signed Stripe-style: ``Mediapipe-Signature: t=<unix>,v1=<hex>``, the hex an
HMAC-SHA256 over ``"<t>.<body>"`` with a secret only the workers hold
(``MEDIAPIPE_WEBHOOK_SECRET``; never in Redis). ``verify`` is what a receiver runs
(docs/webhooks.md shows it without mediapipe installed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.errors import SubmissionError
from pipeline.model import Backoff

WEBHOOK_STAGE = "webhook"
SECRET_ENV = "MEDIAPIPE_WEBHOOK_SECRET"
ALLOW_ENV = "MEDIAPIPE_WEBHOOK_ALLOW"
SCHEMES = ("http", "https")
URL_MAX = 2048
ROOTS_MAX = 16  # roots whose results an event carries (common.lua's WEBHOOK_ROOTS_MAX)
TOLERANCE = 300  # seconds a receiver accepts a signature's timestamp off its clock

HEADER_SIGNATURE = "Mediapipe-Signature"
HEADER_EVENT_ID = "Mediapipe-Event-Id"
HEADER_EVENT = "Mediapipe-Event"
HEADER_ATTEMPT = "Mediapipe-Delivery-Attempt"


# 5 s, 10 s, 20 s ... capped at 30 min: ten tries over about 45 minutes.
DELIVERY_BACKOFF = Backoff(base=5.0, cap=1800.0, jitter=0.2)


@dataclass(frozen=True)
class Delivery:
    """How a delivery job runs, when the submitting process has no ``webhook`` stage
    registered (the stage's own declaration says the same, stages/webhook.py)."""

    queue: str = "default"
    attempts: int = 10
    backoff: Backoff = DELIVERY_BACKOFF
    timeout: float = 60.0


DELIVERY = Delivery()


def check_url(url: str) -> str:
    """``url`` if a webhook may name it (http or https, a host, no credentials, no
    whitespace, at most URL_MAX characters), else SubmissionError saying why. Where it
    may connect is the workers' decision when they deliver (stages/outbound.py)."""
    if not isinstance(url, str) or not url:
        raise SubmissionError("webhook URL is empty")
    if len(url) > URL_MAX:
        raise SubmissionError(f"webhook URL is longer than {URL_MAX} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise SubmissionError("webhook URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SubmissionError(f"webhook URL {url!r}: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise SubmissionError(f"webhook URL {url!r}: only http and https are allowed")
    if not parts.hostname:
        raise SubmissionError(f"webhook URL {url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise SubmissionError(
            f"webhook URL for {parts.hostname}: no credentials in the URL "
            "(the receiver checks the signature instead)"
        )
    if port == 0:
        raise SubmissionError(f"webhook URL {url!r}: port 0")
    return url


def service_name(url: str) -> str:
    """The circuit breaker a delivery counts against: one per host (and port, when the
    URL names one), whatever the path."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return f"webhook:{host}:{parts.port}" if parts.port else f"webhook:{host}"


def encode_spec(url: str, roots: Sequence[str], delivery: Delivery = DELIVERY) -> str:
    """The DAG hash's ``webhook`` field: what the closing transition needs to create the
    delivery job without knowing the stage registry. ``roots``: the names of the DAG's
    roots (jobs nobody depends on), whose results or errors the event carries (the first
    ROOTS_MAX)."""
    backoff = "" if delivery.backoff == Backoff() else _compact(delivery.backoff.to_json())
    return _compact(
        {
            "url": check_url(url),
            "service": service_name(url),
            "roots": list(roots)[:ROOTS_MAX],
            "stage": WEBHOOK_STAGE,
            "queue": delivery.queue,
            "attempts": delivery.attempts,
            "backoff": backoff,
            "timeout_ms": int(delivery.timeout * 1000),
        }
    )


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def signature(secrets: Iterable[str], body: bytes, t: int | None = None) -> str:
    """The ``Mediapipe-Signature`` header: ``t=<unix seconds>,v1=<hex>`` with one ``v1``
    per secret (two while a secret is being rotated)."""
    t = int(time.time()) if t is None else t
    signed = f"{t}.".encode() + body
    macs = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join([f"t={t}", *(f"v1={m}" for m in macs)])


def verify(
    secret: str, header: str, body: bytes, *, tolerance: float = TOLERANCE, now: float | None = None
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and its timestamp is within
    ``tolerance`` seconds of ``now``: what a receiver checks before it trusts an event
    (and then it drops an event id it has seen, which makes a replay harmless)."""
    t, macs = None, []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            t = int(value)
        elif key == "v1":
            macs.append(value)
    if t is None or not macs:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, m) for m in macs)
