"""One logging set-up for every mediapipe process: commands, worker nodes, lanes and pool
children (a spawned child starts with logging unset and is given its parent's settings).

Our loggers (``mediapipe.*``, ``mediajobs.*``) log at the level asked for; libraries
(pyvips, filelock, urllib3, botocore...) only from WARNING up unless asked for too
(``--debug``): below that they write dozens of lines per job that bury ours.

Two formats: ``plain`` lines, or ``json``, one object per line for a log shipper, whose
keys are ``ts``, ``level``, ``logger``, ``message`` and, on a per-job line, that line's
fields (``event``, ``dag``, ``job``, ``stage``... see workers/job_log.py).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("plain", "json")
ENV_FORMAT = "MEDIAPIPE_LOG_FORMAT"
OUR_LOGGERS = ("mediapipe", "mediajobs")
# The attribute of a LogRecord that carries a line's structured fields (``extra=``).
FIELDS = "fields"

_format: str | None = None  # the format this process set up, once it did
_preferred: str | None = None  # the command line's --log-format, for every set-up


@dataclass(frozen=True)
class LogSettings:
    """What a process hands its children so they log as it does."""

    level: int = logging.WARNING  # our loggers
    fmt: str = "plain"
    libraries: int = logging.WARNING  # everyone else's

    @classmethod
    def current(cls) -> LogSettings:
        """This process's settings, whoever set them (``basicConfig`` included)."""
        level = logging.getLogger(OUR_LOGGERS[0]).getEffectiveLevel()
        return cls(level, _format or "plain", logging.getLogger().getEffectiveLevel())


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time: while the progress bars are live,
    rich puts a proxy there that prints each line above the bars instead of through them."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class JsonLines(logging.Formatter):
    """One JSON object per record: ts (UTC, ISO 8601 with ms), level, logger, message,
    the record's fields, and ``exc`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        doc: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def level_number(level: int | str) -> int:
    """``20``, ``"info"`` or ``"INFO"`` as a number; ValueError for anything else."""
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.strip().upper())
    if not isinstance(number, int):
        raise ValueError(f"not a log level: {level!r} (DEBUG, INFO, WARNING, ERROR)")
    return number


def prefer_format(fmt: str | None) -> None:
    """The format ``configure_logging`` uses when its caller names none (the command
    line's global --log-format, for the commands that set up logging themselves)."""
    global _preferred
    _preferred = fmt


def configure_logging(
    level: int | str,
    fmt: str | None = None,
    *,
    libraries: int | str | None = None,
) -> None:
    """Lines on stderr: ours at ``level``, libraries' at ``libraries`` (WARNING unless
    given), in ``fmt`` (plain or json; default the preferred one, ``$MEDIAPIPE_LOG_FORMAT``,
    else plain).
    Does nothing where logging is set up already (a forked child inherits its parent's
    handlers, a test runner has its own)."""
    global _format
    root = logging.getLogger()
    if root.handlers:
        return
    fmt = (fmt or _preferred or os.environ.get(ENV_FORMAT) or "plain").strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"not a log format: {fmt!r} (plain or json)")
    ours = level_number(level)
    handler = _Stderr()
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level_number(libraries) if libraries is not None else logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(ours)
    _format = fmt


def apply(settings: LogSettings) -> None:
    """Set up a child process as its parent is (see ``LogSettings.current``)."""
    configure_logging(settings.level, settings.fmt, libraries=settings.libraries)
