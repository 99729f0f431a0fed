"""What a won tick did: the records schedule firing returns (mediajobs/schedule_firing.py
for files, mediajobs/schedule_s3.py for object storage)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SubmittedInput:
    path: str
    dag_id: str
    sha256: str
    created: bool  # False: an earlier firing had already submitted this content


@dataclass(frozen=True)
class Firing:
    """What one won tick did."""

    schedule: str
    tick: int
    late: bool
    submitted: tuple[SubmittedInput, ...] = ()
    rejected: tuple[tuple[str, str], ...] = ()  # (path, why)
    error: str | None = None
