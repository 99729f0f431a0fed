"""Every media stage reports its own attempt and run time, for the manifest."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

StageFunction = Callable[[Any, dict[str, Any], dict[str, Any]], dict[str, Any]]


def reports_timing(fn: StageFunction) -> StageFunction:
    @functools.wraps(fn)
    def wrapper(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        start = time.monotonic()
        result = fn(ctx, params, inputs)
        result["stage_info"] = {
            "attempt": getattr(ctx, "attempt", 1),
            "seconds": round(time.monotonic() - start, 3),
        }
        return result

    return wrapper
