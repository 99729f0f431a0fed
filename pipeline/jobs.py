"""What a worker holds while it runs a job."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PermanentError
from pipeline.jsontext import dumps_strict, loads_reply
from pipeline.model import Backoff
from pipeline.replies import as_str


class RawJSON(str):
    """A result already serialised as JSON (by the pool child that produced it)."""


def encode_result(stage: str, result: Any) -> RawJSON:
    """A stage's result as the JSON text its completion sends; a result that is not JSON
    fails the job permanently (retrying would return the same)."""
    try:
        return RawJSON(dumps_strict(result))
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"stage {stage!r} returned a non-JSON result: {exc}") from None


@dataclass(slots=True)
class ClaimedJob:
    # Slots, and built positionally in from_flat: a worker makes one per job, and the
    # keyword form with a dict per instance cost a no-op job ~8,200 of the ~124,000
    # instructions its worker's Python spent (callgrind).
    id: str
    queue: str
    token: str
    stage: str
    params: dict[str, Any]
    dag_id: str
    name: str
    attempt: int
    max_attempts: int
    timeout: float
    cost: int
    backoff: Backoff
    inputs: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_flat(cls, reply: list[Any], at: int) -> tuple[ClaimedJob, int]:
        """The job that starts at ``reply[at]`` in a claim's flat reply (put_claimed in
        pipeline/scripts/includes/claim_next.lua), and the index after it."""
        (
            jid,
            queue,
            token,
            stage,
            params,
            attempt,
            max_attempts,
            timeout_ms,
            cost,
            backoff,
            n,
        ) = reply[at : at + 11]
        if type(jid) is bytes:  # the usual client (no decode_responses): decoded here at once
            jid, queue, token, stage = jid.decode(), queue.decode(), token.decode(), stage.decode()
        else:
            jid, queue, token, stage = map(as_str, (jid, queue, token, stage))
        dag, _, name = jid.partition("/")
        inputs: dict[str, Any] = {}
        failures: dict[str, Any] = {}
        end = at + 11
        if n:
            end += n
            for i in range(at + 11, end, 2):
                key, value = as_str(reply[i]), loads_reply(reply[i + 1])
                if key.startswith("!"):
                    failures[_child_name(key[1:])] = value
                else:
                    inputs[_child_name(key)] = value
        job = cls(
            jid,
            queue,
            token,
            stage,
            loads_reply(params),
            dag,
            name,
            int(attempt),
            int(max_attempts),
            int(timeout_ms) / 1000,
            int(cost),
            _backoff(backoff) if backoff else _NO_BACKOFF,
            inputs,
            failures,
        )
        return job, end


_NO_BACKOFF = Backoff.from_json(None)  # what a job without a policy of its own gets


@functools.lru_cache(maxsize=256)
def _backoff(raw: bytes | str) -> Backoff:
    # A fleet runs a handful of distinct policies; parsing each once keeps JSON decoding
    # off the per-job path. Backoff is frozen, so sharing one instance is safe.
    return Backoff.from_json(json.loads(raw) if raw else None)


def _child_name(job_id: str) -> str:
    return job_id.rsplit("/", 1)[-1]
