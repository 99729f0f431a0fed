"""Reading a DAG's event stream. Events live in a capped Redis Stream per DAG, so a watcher
that starts late (or reconnects) replays everything it missed, in order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from pipeline.keys import Keys

DAG_END_EVENTS = frozenset({"dag_completed", "dag_failed", "dag_cancelled"})


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    job: str
    fields: dict[str, str]

    @property
    def timestamp_ms(self) -> int:
        return int(self.id.split("-", 1)[0])


def read_events(
    client: redis.Redis,
    keys: Keys,
    dag_id: str,
    *,
    after: str = "0",
    block: float | None = None,
    follow: bool = False,
    batch: int = 500,
) -> Iterator[Event]:
    stream = keys.dag_events(dag_id)
    last = after
    while True:
        block_ms = int((block if block is not None else 1.0) * 1000) if follow else None
        reply: Any = client.xread({stream: last}, count=batch, block=block_ms)
        if not reply:
            if not follow:
                return
            if _finished(client, keys, dag_id):
                return
            continue
        for _, entries in reply:
            for eid, raw in entries:
                last = eid.decode()
                f = {k.decode(): v.decode() for k, v in raw.items()}
                ev = Event(last, f.pop("ev", ""), f.pop("job", ""), f)
                yield ev
                if follow and ev.type in DAG_END_EVENTS and _finished(client, keys, dag_id):
                    return


def _finished(client: redis.Redis, keys: Keys, dag_id: str) -> bool:
    """True once the DAG is closed (a retried DAG reopens, so the last end event may not be)."""
    finished = client.hget(keys.dag(dag_id), "finished")
    return finished is None or finished != b""
