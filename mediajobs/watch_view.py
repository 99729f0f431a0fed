"""The view ``mediapipe watch`` follows a DAG with: the progress view, and one line each
time the answer to "does anything serve this DAG's queues?" changes."""

from __future__ import annotations

import math
import time

from mediajobs.progress_view import ProgressView
from pipeline.client import Client
from pipeline.outage import Outage
from pipeline.serving import unserved


class ServingView(ProgressView):
    """The progress view of ``watch``, which also says when nothing serves the DAG's
    queues and why (pipeline/serving.py), each time that answer changes, checked every
    ``SERVING_EVERY`` seconds (a few reads of the queues and heartbeats). It uses only the
    view's public ``poll``, ``finished`` and ``notice``."""

    SERVING_EVERY = 2.0

    def __init__(self, client: Client, dag_id: str, label: str, outage: Outage) -> None:
        super().__init__(client, {dag_id: label}, outage=outage)
        self._serving_dag = dag_id
        self._serving_said: tuple[str, ...] = ()
        self._serving_checked = -math.inf

    def poll(self) -> None:
        super().poll()
        if self.finished() or time.monotonic() - self._serving_checked < self.SERVING_EVERY:
            return
        self._serving_checked = time.monotonic()
        found = unserved(self.client.redis, self.client.keys, self._serving_dag)
        now = tuple(dict.fromkeys(u.message for u in found))  # each reason once
        if now != self._serving_said:
            if now:
                self.notice(f"waiting: {'; '.join(now)}")
            elif self._serving_said:
                self.notice("its queues are served again")
            self._serving_said = now
