"""One logging set-up for every mediapipe process: commands, worker nodes, lanes and pool
children (a spawned child starts with logging unset and is given its parent's level)."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int | str) -> None:
    """Lines on stderr at ``level`` (a number or a name such as ``"info"``). Does nothing
    where logging is set up already (a forked child inherits its parent's handlers)."""
    if isinstance(level, str):
        level = level.upper()
    logging.basicConfig(level=level, stream=sys.stderr, format=LOG_FORMAT)
