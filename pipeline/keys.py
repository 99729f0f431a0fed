"""Every Redis key name in one place.

All keys of a namespace share one hash tag (``{ns}``) so the whole namespace lives in one
Redis Cluster slot and every Lua script may touch any of its keys. The Lua scripts build
the same names from the prefix they are given: each ``k_<name>`` function in
``scripts/includes/common.lua`` mirrors the method of the same meaning here, and
tests/pipeline/test_keys.py runs both against a real server to prove they agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import SubmissionError

# DAG ids, job names and namespaces are parts of key names. Limited to these characters
# (no ':', '/', braces, spaces), one cannot end where another key name begins: a DAG
# called "x:jobs" would otherwise share its key with the job set of DAG "x", and a
# namespace holding '}' would move the Redis Cluster hash tag. The Lua scripts check the
# same set before they write (includes/create_jobs.lua).
ID_CHARS = "A-Za-z0-9._-"
DAG_ID_MAX = 64
JOB_NAME_MAX = 128
NAMESPACE_MAX = 32
_ID = re.compile(f"[{ID_CHARS}]+")


def check_identifier(value: object, what: str, limit: int) -> str:
    """``value`` if it is 1..``limit`` characters of ``[A-Za-z0-9._-]``; else a
    SubmissionError naming ``what``."""
    if not isinstance(value, str) or not _ID.fullmatch(value) or len(value) > limit:
        raise SubmissionError(
            f"invalid {what} {value!r}: use 1 to {limit} characters of letters, digits, "
            "'.', '_' and '-'"
        )
    return value


@dataclass(frozen=True)
class Keys:
    namespace: str = "mp"

    def __post_init__(self) -> None:
        check_identifier(self.namespace, "namespace", NAMESPACE_MAX)

    @property
    def prefix(self) -> str:
        return "{" + self.namespace + "}:"

    # -- global ---------------------------------------------------------------
    @property
    def seq(self) -> str:
        return self.prefix + "seq"

    @property
    def events(self) -> str:
        return self.prefix + "events"

    @property
    def dead(self) -> str:
        return self.prefix + "dead"

    @property
    def queues(self) -> str:
        return self.prefix + "queues"

    @property
    def dags_done(self) -> str:
        return self.prefix + "dags:done"

    @property
    def dags_failed(self) -> str:
        return self.prefix + "dags:failed"

    @property
    def dags_building(self) -> str:
        """DAGs still being submitted in steps, scored by when their submit began."""
        return self.prefix + "dags:building"

    @property
    def workers(self) -> str:
        return self.prefix + "workers"

    def worker(self, worker_id: str) -> str:
        return self.prefix + "worker:" + worker_id

    def worker_control(self, worker_id: str) -> str:
        """What an operator asked a worker to do (drain, stop); pipeline/worker_control.py."""
        return self.prefix + "worker:" + worker_id + ":control"

    def idempotency(self, key: str) -> str:
        return self.prefix + "idem:" + key

    def request(self, client: str) -> str:
        """The latest request of one client thread and its reply (scripts/includes/request.lua)."""
        return self.prefix + "req:" + client

    @property
    def retention(self) -> str:
        """Hash: when the next prune step may run, and how long idempotency keys live."""
        return self.prefix + "retention"

    # -- schedules --------------------------------------------------------------
    @property
    def schedules(self) -> str:
        """Hash: schedule name -> the schedule as JSON."""
        return self.prefix + "schedules"

    def schedule_last(self, name: str) -> str:
        """The newest tick of a schedule already taken (epoch seconds)."""
        return self.prefix + "schedule:" + name + ":last"

    def schedule_seen(self, name: str) -> str:
        """Set: sha256 of every input a watching schedule has handled."""
        return self.prefix + "schedule:" + name + ":seen"

    # -- staged inputs ------------------------------------------------------------
    @property
    def staged(self) -> str:
        """Hash: id of an object a submit staged -> where it is (JSON: uri, endpoint)."""
        return self.prefix + "staged"

    @property
    def staged_sweep(self) -> str:
        """Taken by the node sweeping staged inputs this interval (one at a time)."""
        return self.prefix + "staged-sweep"

    def staged_users(self, object_id: str) -> str:
        """Hash: what keeps a staged object: DAG id -> grace (ms, then ':' the end seen
        once the DAG is gone), ``hold:<token>`` -> until (ms), ``keep``."""
        return self.prefix + "staged:" + object_id

    def staged_deleting(self, object_id: str) -> str:
        """A sweeper's token while it deletes the object (expires: a sweeper that died)."""
        return self.prefix + "staged:" + object_id + ":deleting"

    # -- external services ------------------------------------------------------
    def breaker(self, service: str) -> str:
        """Hash: the circuit breaker of one external service (state, opened_at, ...)."""
        return self.prefix + "breaker:" + service

    def breaker_pattern(self) -> str:
        """Glob matching every breaker of the namespace (SCAN)."""
        return self._glob_prefix() + "breaker:*"

    def service_rate(self, service: str) -> str:
        """Counter of jobs started against a service in the current rate window."""
        return self.prefix + "rate:" + service

    # -- jobs -----------------------------------------------------------------
    def job(self, job_id: str) -> str:
        return self.prefix + "job:" + job_id

    def job_progress(self, job_id: str) -> str:
        return self.prefix + "job:" + job_id + ":progress"

    def job_parents(self, job_id: str) -> str:
        return self.prefix + "job:" + job_id + ":parents"

    def job_deps(self, job_id: str) -> str:
        return self.prefix + "job:" + job_id + ":deps"

    def job_results(self, job_id: str) -> str:
        return self.prefix + "job:" + job_id + ":results"

    # -- DAGs -----------------------------------------------------------------
    def dag(self, dag_id: str) -> str:
        return self.prefix + "dag:" + dag_id

    def dag_jobs(self, dag_id: str) -> str:
        return self.prefix + "dag:" + dag_id + ":jobs"

    def dag_events(self, dag_id: str) -> str:
        return self.prefix + "dag:" + dag_id + ":events"

    def dag_leaves(self, dag_id: str) -> str:
        """Jobs of a DAG still being submitted in steps, to enqueue once it is whole."""
        return self.prefix + "dag:" + dag_id + ":leaves"

    # -- queues ---------------------------------------------------------------
    def wait(self, queue: str) -> str:
        return self.prefix + "q:" + queue + ":wait"

    def delayed(self, queue: str) -> str:
        return self.prefix + "q:" + queue + ":delayed"

    def active(self, queue: str) -> str:
        return self.prefix + "q:" + queue + ":active"

    def meta(self, queue: str) -> str:
        return self.prefix + "q:" + queue + ":meta"

    def marker(self, queue: str) -> str:
        return self.prefix + "q:" + queue + ":marker"

    def rate(self, queue: str) -> str:
        return self.prefix + "q:" + queue + ":rate"

    def pattern(self) -> str:
        """Glob matching every key of the namespace (used only by tests and ``purge``)."""
        return self._glob_prefix() + "*"

    def _glob_prefix(self) -> str:
        return self.prefix.replace("{", "\\{").replace("}", "\\}")
