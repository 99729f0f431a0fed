"""Reading a DAG's event stream. Events live in a capped Redis Stream per DAG, so a watcher
that starts late (or reconnects) replays everything it missed, in order.

A DAG's stream is created by its first event after the submit: a waiting DAG has none (a
stream costs a 4 KB node however few its entries). Its `submitted` event is read from
the DAG hash instead and comes first, with the id ``0-1`` (every stream id is above it,
so a watcher resuming after it misses nothing). DAGs of schema 1 have it in the stream.

A one-job DAG whose run is the plain one (claimed once, completed) never gets a stream:
its `active`, `completed` and `dag_completed` events are read from its hashes, with the
ids they would get if written (``quiet_events`` in pipeline/scripts). A follower needs a
stream to block on, so following such a DAG writes them into it first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from pipeline.keys import Keys
from pipeline.replies import as_str
from pipeline.scripts import Scripts

DAG_END_EVENTS = frozenset({"dag_completed", "dag_failed", "dag_cancelled"})


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    job: str
    fields: dict[str, str]
    at_ms: int | None = None  # when the id does not say it (the `submitted` event)

    @property
    def timestamp_ms(self) -> int:
        return self.at_ms if self.at_ms is not None else int(self.id.split("-", 1)[0])


def read_events(
    client: redis.Redis,
    keys: Keys,
    dag_id: str,
    *,
    after: str = "0",
    block: float | None = None,
    follow: bool = False,
    batch: int = 500,
    scripts: Scripts | None = None,
) -> Iterator[Event]:
    stream = keys.dag_events(dag_id)
    last = after
    if after in ("0", "0-0"):
        submitted = _submitted(client, keys, dag_id)
        if submitted is not None:
            yield submitted
            last = submitted.id
    scripts = scripts or Scripts(client)
    quiet: Any = scripts.run("quiet_events", keys.prefix, dag_id, "stream" if follow else "")
    if int(quiet[0]) == 1:
        for raw in quiet[1:]:
            eid = as_str(raw[0])
            if _id_key(eid) > _id_key(last):
                f = {as_str(raw[i]): as_str(raw[i + 1]) for i in range(1, len(raw), 2)}
                yield Event(eid, f.pop("ev", ""), f.pop("job", ""), f)
        return
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


SUBMITTED_ID = "0-1"


def _id_key(eid: str) -> tuple[int, int]:
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq or 0)


def _submitted(client: redis.Redis, keys: Keys, dag_id: str) -> Event | None:
    """The `submitted` event of a schema-2 DAG whose submit is complete (not building)."""
    v, state, total, created = client.hmget(keys.dag(dag_id), "v", "state", "total", "created")
    if v is None or state in (None, b"building") or created is None:
        return None
    if _trimmed(client, keys.dag_events(dag_id)):
        return None  # it was the oldest event, gone with the first ones the cap dropped
    return Event(SUBMITTED_ID, "submitted", "", {"jobs": as_str(total)}, at_ms=int(created))


def _trimmed(client: redis.Redis, stream: str) -> bool:
    """Whether the stream's cap has dropped entries (Redis >= 7 counts them; on 6.2 the
    count is not kept and nothing is taken as dropped)."""
    try:
        info: Any = client.xinfo_stream(stream)
    except redis.ResponseError:
        return False  # no stream yet
    added = info.get("entries-added")
    return added is not None and int(added) > int(info["length"])


def _finished(client: redis.Redis, keys: Keys, dag_id: str) -> bool:
    """True once the DAG is closed (a retried DAG reopens, so the last end event may not be)
    or gone (pruned)."""
    state, finished = client.hmget(keys.dag(dag_id), "state", "finished")
    return state is None or finished not in (None, b"")
