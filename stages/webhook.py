"""webhook: post a DAG's end event to the URL its submitter named, signed.

The engine creates this job in the transition that closes a DAG submitted with a webhook
(pipeline/webhooks.py; ``open_delivery`` in scripts/includes/common.lua); its params hold
the URL, the breaker's service name, the event (id, type, the DAG's counts and times)
and the DAG's meta, and its inputs are the DAG's roots' results (the manifest, for a
``mediapipe submit`` DAG) and its failures their errors. One attempt is one POST:

- the URL passes the outbound policy first (stages/outbound.py): refused, the job goes to
  the dead-letter queue at once with the reason and how to allow it;
- the connection goes to the checked address, with a short timeout (``TIMEOUT``, or
  ``MEDIAPIPE_WEBHOOK_TIMEOUT``), and no redirect is followed;
- 2xx: delivered; a 3xx, or a 4xx other than 408 and 429: refused by the receiver,
  permanent; a 5xx, 408, 429, a refused connection or a timeout: ``ServiceFailedError``,
  retried after the backoff (the job waits in the delayed set, not in a worker slot) and
  counted by the host's circuit breaker, then dead-lettered when the attempts run out.

The body is at most ``MAX_BODY`` bytes: when the roots' results make it larger they are
left out (``"truncated": true``), and the manifest's location stays.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
from functools import cache
from importlib import metadata
from typing import Any

from pipeline.errors import PermanentError, ServiceFailedError
from pipeline.registry import stage
from pipeline.webhooks import (
    DELIVERY,
    HEADER_ATTEMPT,
    HEADER_EVENT,
    HEADER_EVENT_ID,
    HEADER_SIGNATURE,
    SECRET_ENV,
    WEBHOOK_STAGE,
    signature,
)
from stages.outbound import OutboundPolicy, Target, pinned_connection

TIMEOUT = 10.0  # seconds for the connection and for each read
MAX_BODY = 64 * 1024
MAX_RESPONSE = 4096  # bytes of the receiver's answer read (for the error message)
EVENT_SCHEMA = 1


@cache
def _version() -> str:
    try:
        return metadata.version("mediajobs")
    except metadata.PackageNotFoundError:
        return "dev"


def secrets_from_env() -> list[str]:
    """The signing secrets (comma-separated: the new one first while rotating)."""
    secrets = [s.strip() for s in os.environ.get(SECRET_ENV, "").split(",") if s.strip()]
    if not secrets:
        raise PermanentError(
            f"{SECRET_ENV} is not set on this worker: webhooks are sent signed only "
            "(set it on every worker, then retry the job from the dead-letter queue)"
        )
    return secrets


def build_event(
    params: dict[str, Any], inputs: dict[str, Any], failures: dict[str, Any]
) -> dict[str, Any]:
    """The event as posted: id, type, times, the DAG's counts, its meta, its roots'
    results and errors, and the manifest's location when a root produced one."""
    event = params["event"]
    dag = dict(event["dag"])
    done = dag["total"] - dag["dead"] - dag["upstream_failed"] - dag["cancelled"]
    dag["completed"] = max(done, 0)
    try:
        dag["meta"] = json.loads(params.get("meta") or "{}")
    except ValueError:
        dag["meta"] = {}
    errors = {
        name: {k: err.get(k) for k in ("type", "message") if k in err}
        for name, err in failures.items()
        if isinstance(err, dict)
    }
    return {
        "schema": EVENT_SCHEMA,
        "id": event["id"],
        "type": event["type"],
        "created": event["created"] / 1000,
        "dag": dag,
        "manifest": _manifest(inputs),
        "results": inputs,
        "errors": errors,
        "truncated": False,
    }


def _manifest(inputs: dict[str, Any]) -> dict[str, Any] | None:
    """A root's ``manifest`` output (path or URI, bytes, sha256), as stages/manifest.py
    returns it."""
    for result in inputs.values():
        if isinstance(result, dict) and isinstance(result.get("manifest"), dict):
            return dict(result["manifest"])
    return None


def encode_body(event: dict[str, Any]) -> bytes:
    """The event as JSON, at most MAX_BODY bytes: the results go first, then the meta."""
    body = json.dumps(event, separators=(",", ":")).encode()
    for key in ("results", "errors"):
        if len(body) <= MAX_BODY:
            break
        event = {**event, key: {}, "truncated": True}
        body = json.dumps(event, separators=(",", ":")).encode()
    if len(body) > MAX_BODY:
        event = {**event, "dag": {**event["dag"], "meta": {}}, "truncated": True}
        body = json.dumps(event, separators=(",", ":")).encode()
    return body


def post(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """One POST to the checked address; the status, or ServiceFailedError when the
    receiver cannot be reached or answers too slowly."""
    conn = pinned_connection(target, timeout)
    try:
        conn.request("POST", target.path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read(MAX_RESPONSE)
        return _checked(resp.status, resp.getheader("Location"), target)
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(
            f"{target.host}: TLS certificate refused ({exc.verify_message})"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        what = (
            "timed out"
            if isinstance(exc, TimeoutError | socket.timeout)
            else str(exc) or type(exc).__name__
        )
        raise ServiceFailedError(
            f"webhook to {target.host} ({target.address}:{target.port}): {what}"
        ) from None
    finally:
        conn.close()


def _checked(status: int, location: str | None, target: Target) -> int:
    where = f"webhook to {target.host} ({target.address}:{target.port})"
    if 200 <= status < 300:
        return status
    if 300 <= status < 400:
        raise PermanentError(
            f"{where}: the receiver answered {status} (redirect to {location or '?'}); "
            "redirects are not followed: give the final URL"
        )
    if status >= 500 or status in (408, 429):
        raise ServiceFailedError(f"{where}: the receiver answered {status}")
    raise PermanentError(f"{where}: the receiver refused the event ({status})")


@stage(
    WEBHOOK_STAGE,
    queue=DELIVERY.queue,
    attempts=DELIVERY.attempts,
    backoff=DELIVERY.backoff,
    timeout=DELIVERY.timeout,
)
def webhook(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    secrets = secrets_from_env()
    target = OutboundPolicy.from_env().check(params["url"])
    if params.get("service"):
        ctx.check_service(str(params["service"]))  # the breaker opened since the claim
    event = build_event(params, inputs, ctx.job.failures)
    body = encode_body(event)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"mediapipe-webhook/{_version()}",
        HEADER_EVENT_ID: event["id"],
        HEADER_EVENT: event["type"],
        HEADER_ATTEMPT: str(ctx.attempt),
        HEADER_SIGNATURE: signature(secrets, body, int(time.time())),
    }
    timeout = float(os.environ.get("MEDIAPIPE_WEBHOOK_TIMEOUT", TIMEOUT))
    status = post(target, body, headers, timeout)
    return {"event": event["id"], "status": status, "address": target.address, "bytes": len(body)}
