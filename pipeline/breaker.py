"""Circuit breakers for external services, shared by the whole fleet through Redis.

Written here rather than taken from pybreaker: pybreaker's Redis storage makes several
separate, non-atomic round trips per call (GET state, INCR counter, SET state, a WATCH
transaction for ``opened_at``), keeps ``opened_at`` in whole seconds, and lets every
process through at once while half-open. Here each decision is one atomic Lua transition
(``service_gate``, ``service_outcome``): one node's failures open the breaker for every
node, exactly one job probes after the cool-down, and the same call enforces the
service's fleet-wide rate limit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import redis

from pipeline.clock import redis_now_ms
from pipeline.keys import Keys
from pipeline.replies import as_str
from pipeline.scripts import Scripts


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int = 3  # failures in a row that open the breaker
    cooldown: float = 15.0  # seconds open before a single probe is let through
    probe_lease: float = 120.0  # seconds a probe may take before another is allowed
    rate_max: int = 0  # jobs per window started against the service (0: no limit)
    rate_window: float = 1.0

    @classmethod
    def from_env(cls) -> BreakerPolicy:
        env = os.environ
        return cls(
            failures=int(env.get("MEDIAPIPE_BREAKER_FAILURES", cls.failures)),
            cooldown=float(env.get("MEDIAPIPE_BREAKER_COOLDOWN", cls.cooldown)),
            probe_lease=float(env.get("MEDIAPIPE_BREAKER_PROBE_LEASE", cls.probe_lease)),
            rate_max=int(env.get("MEDIAPIPE_STORAGE_RATE", cls.rate_max)),
            rate_window=float(env.get("MEDIAPIPE_STORAGE_RATE_WINDOW", cls.rate_window)),
        )


@dataclass(frozen=True)
class Gate:
    allowed: bool
    retry_in: float  # seconds
    state: str  # closed, open, half_open, rate_limited


class ServiceBreakers:
    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str = "mp",
        policy: BreakerPolicy | None = None,
        scripts: Scripts | None = None,
    ) -> None:
        self.redis = client
        self.keys = Keys(namespace)
        self.policy = policy or BreakerPolicy()
        self.scripts = scripts or Scripts(client)

    def gate(self, service: str) -> Gate:
        p = self.policy
        allowed, retry_ms, state = self.scripts.run(
            "service_gate",
            self.keys.prefix,
            service,
            int(p.cooldown * 1000),
            int(p.probe_lease * 1000),
            p.rate_max,
            int(p.rate_window * 1000),
        )
        return Gate(bool(allowed), int(retry_ms) / 1000, as_str(state))

    def outcome(self, service: str, ok: bool) -> str:
        return as_str(
            self.scripts.run(
                "service_outcome",
                self.keys.prefix,
                service,
                "ok" if ok else "fail",
                self.policy.failures,
            )
        )

    def state(self, service: str) -> tuple[str, float]:
        """(state, seconds until the cool-down ends) without changing anything."""
        state, opened_at = self.redis.hmget(self.keys.breaker(service), "state", "opened_at")
        if state is None:
            return "closed", 0.0
        now_ms = redis_now_ms(self.redis)
        left = (int(opened_at or 0) + self.policy.cooldown * 1000 - now_ms) / 1000
        return as_str(state), max(left, 0.0)

    def states(self) -> dict[str, dict[str, str]]:
        """Every breaker's state, for ``mediapipe status``."""
        out = {}
        start = len(self.keys.breaker(""))
        for key in self.redis.scan_iter(match=self.keys.breaker_pattern()):
            name = as_str(key)[start:]
            out[name] = {as_str(k): as_str(v) for k, v in self.redis.hgetall(key).items()}
        return out


def service_name(target: str, endpoint: str | None = None) -> str:
    """The breaker that guards a storage target: one per endpoint and bucket."""
    if target.startswith("s3://"):
        bucket = target[5:].split("/", 1)[0]
        where = endpoint or os.environ.get("AWS_ENDPOINT_URL") or "aws"
        return f"s3:{where}/{bucket}"
    return f"file:{target}"
