"""The job model and all state in Redis: DAGs, Lua transitions, client, events."""

from pipeline.client import Client, Submitted
from pipeline.errors import (
    BadInputError,
    MediapipeError,
    PermanentError,
    RetryableError,
    SubmissionError,
)
from pipeline.model import Backoff, BackoffKind, Dag, EdgePolicy, JobOptions
from pipeline.registry import REGISTRY, Registry, StageSpec, stage

__all__ = [
    "REGISTRY",
    "Backoff",
    "BackoffKind",
    "BadInputError",
    "Client",
    "Dag",
    "EdgePolicy",
    "JobOptions",
    "MediapipeError",
    "PermanentError",
    "Registry",
    "RetryableError",
    "StageSpec",
    "SubmissionError",
    "Submitted",
    "stage",
]
