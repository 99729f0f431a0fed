"""The raw floor's consumer with mediapipe's transport: the peer harness's BRPOP loop
(``../shared/bench/peers/floor_consumer.py brpop``: one job per round trip, each
``json.loads``-ed and counted) with every command sent and its reply read by
``pipeline.rawlane.RawLane``, which spins for a reply where that answers sooner (as the
transitions' calls do). Its rate is the ceiling for a worker that waits the way ours do;
the harness's ``floor-brpop-2c`` waits blocking, as redis-py and every peer do.

    python benchmarks/floor_lane.py   (run by queue_bench.py's floor-brpop-2c-lane case)
"""

from __future__ import annotations

import json
import os

import hiredis
import peercount  # the peer harness's counter (its folder is on PYTHONPATH)
import redis

from pipeline.rawlane import RawLane

QUEUE = "floor:q"  # floor_consumer.py's


def main() -> None:
    conn = redis.Redis.from_url(os.environ["PEERBENCH_REDIS_URL"]).connection_pool.make_connection()
    conn.connect()
    lane = RawLane.of(conn)
    if lane is None:
        raise SystemExit("no RawLane on this connection (needs hiredis and a plain socket)")
    brpop = hiredis.pack_command(("BRPOP", QUEUE, 0.5))  # type: ignore[arg-type]
    loads, record = json.loads, peercount.record
    while True:
        item = lane.call(brpop)
        if item is None:  # empty for 0.5 s: the queue was filled before the start
            break
        loads(item[1])
        record()


if __name__ == "__main__":
    main()
