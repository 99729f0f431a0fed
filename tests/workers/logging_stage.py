"""A stage for tests/workers/test_child_logging.py: it only logs, at debug level."""

from __future__ import annotations

import logging
from typing import Any


def logs_at_debug(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    logging.getLogger("mediapipe.test").debug("child says %s", params["word"])
    return {}
