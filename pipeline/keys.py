"""Every Redis key name in one place.

All keys of a namespace share one hash tag (``{ns}``) so the whole namespace lives in one
Redis Cluster slot and every Lua script may touch any of its keys. The Lua scripts build
the same names from the prefix they are given; ``scripts/includes/keys.lua`` mirrors this
module and the two must change together.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    namespace: str = "mp"

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
    def workers(self) -> str:
        return self.prefix + "workers"

    def worker(self, worker_id: str) -> str:
        return self.prefix + "worker:" + worker_id

    def idempotency(self, key: str) -> str:
        return self.prefix + "idem:" + key

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
        return self.prefix.replace("{", "\\{").replace("}", "\\}") + "*"
