"""A fixed amount of pure-Python CPU work, as a mediapipe stage and as a plain function.

Both sides of the worker benchmark run exactly this function with the same iteration
count, so the only difference measured is how the work is dispatched.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.registry import stage


def spin(iterations: int) -> tuple[float, float]:
    start = time.time()
    x = 0
    for i in range(iterations):
        x ^= i * 2654435761 & 0xFFFF
    return start, time.time()


@stage("bench.spin", attempts=1)
def spin_stage(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> list[float]:
    return list(spin(int(params["iterations"])))
