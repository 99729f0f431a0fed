"""Idle workers block on their queues' marker lists instead of polling Redis.

The node's main loop waits on its children's pipes; this thread does the blocking BLPOP
on its own connection and, when a marker arrives, writes a byte to a pipe the main loop
also waits on. Submission to a running claim then takes one wake-up, not a poll interval.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

import redis

log = logging.getLogger("mediapipe.worker")


class Waker(threading.Thread):
    def __init__(self, connect: Callable[[], redis.Redis], markers: Sequence[str]) -> None:
        super().__init__(daemon=True, name="marker-waker")
        self._connect = connect
        self.markers = list(markers)
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.armed = threading.Event()
        self._stopped = threading.Event()

    def arm(self) -> None:
        """The main loop found no work: wake it when a marker arrives."""
        self.armed.set()

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 512):
                pass
        except BlockingIOError:
            pass

    def run(self) -> None:
        client: redis.Redis | None = None
        while not self._stopped.is_set():
            if not self.armed.wait(0.5):
                continue
            try:
                if client is None:
                    client = self._connect()
                got = client.blpop(self.markers, timeout=1)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                client = None  # Redis restarting: the main loop reconnects on its own
                self._stopped.wait(0.5)
                continue
            if got is not None and not self._stopped.is_set():
                self.armed.clear()
                os.write(self._write_fd, b"w")

    def stop(self) -> None:
        self._stopped.set()
        self.armed.set()
