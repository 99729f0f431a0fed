"""Writes tests/pipeline/layout_v1.json: DAGs in flight, as the Redis layout of schema 1
(mediapipe up to c2e3b44) stored them. Run once with that version checked out:

    git worktree add /tmp/v1 c2e3b44 && cd /tmp/v1 && \
      python tests/pipeline/layout_v1_make.py redis://127.0.0.1:6379/15 OUT.json

test_layout_upgrade.py loads the dump into a fresh namespace and runs today's workers on
it. The DAGs (stage ``step`` returns its name and the inputs it saw):
- ``fresh``: probe -> renditions -> manifest (manifest also after probe), nothing run;
  submitted with an idempotency key.
- ``half``: the same shape, probe completed (its result handed to both parents).
- ``stalled``: the same shape, probe completed, renditions claimed by a worker that died
  (its lease long lapsed by the time the test runs).
- ``dead``: a -> b (fail edge), a failed permanently: a in the dead-letter queue, b
  upstream_failed; retried after the upgrade.
- ``soft``: a -> b over a ``continue`` edge, a dead: b is queued with a's error.
- ``single``: one job, waiting.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.errors import PermanentError
from pipeline.model import Dag, EdgePolicy
from pipeline.registry import Registry, stage

NS = "v1"


def chain(dag_id: str, idem: str | None = None) -> Dag:
    dag = Dag(dag_id=dag_id, idempotency_key=idem, meta={"input": "/data/in/" + dag_id + ".jpg"})
    dag.add("probe", "step", {"name": "probe", "pad": "x" * 100})
    dag.add(
        "renditions",
        "step",
        {"name": "renditions", "widths": [2048, 1024, 512, 256]},
        after=["probe"],
    )
    dag.add("manifest", "step", {"name": "manifest"}, after=["probe", "renditions"])
    return dag


def dump(r: redis.Redis) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw in sorted(r.scan_iter(match="{" + NS + "}:*", count=1000)):
        key = raw.decode()
        if key.startswith("{" + NS + "}:req:"):
            continue  # request records: a client's, not the DAGs' state
        t = r.type(raw).decode()
        if t == "hash":
            v: Any = {k.decode(): x.decode() for k, x in r.hgetall(raw).items()}
        elif t == "set":
            v = sorted(m.decode() for m in r.smembers(raw))
        elif t == "zset":
            v = [[m.decode(), s] for m, s in r.zrange(raw, 0, -1, withscores=True)]
        elif t == "list":
            v = [m.decode() for m in r.lrange(raw, 0, -1)]
        elif t == "string":
            v = r.get(raw).decode()  # type: ignore[union-attr]
        elif t == "stream":
            v = [
                [i.decode(), {k.decode(): x.decode() for k, x in f.items()}]
                for i, f in r.xrange(raw)
            ]
        else:
            raise SystemExit(f"{key}: unexpected type {t}")
        out[key[len(NS) + 3 :]] = {"type": t, "value": v}
    return out


def main() -> None:
    r = redis.Redis.from_url(sys.argv[1])
    for k in r.scan_iter(match="{" + NS + "}:*"):
        r.delete(k)
    reg = Registry()

    @stage("step", registry=reg)
    def step(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        return {"name": params["name"], "saw": sorted(inputs)}

    client = Client(r, namespace=NS, registry=reg)
    broker = Broker(r, namespace=NS, registry=reg, lease=1.0)

    def take(job_id: str) -> Any:
        jobs, _ = broker.claim(["default"], count=50)
        (job,) = [j for j in jobs if j.id == job_id]
        broker.release([j for j in jobs if j is not job])  # back to their places, nobody's
        return job

    def run_one(job_id: str) -> None:
        job = take(job_id)
        broker.complete(job, {"name": job.id.split("/")[1], "saw": sorted(job.inputs)})

    for dag_id in ("half", "stalled"):
        client.submit(chain(dag_id))
    run_one("half/probe")
    run_one("stalled/probe")
    take("stalled/renditions")  # held by a worker that dies

    dead = Dag(dag_id="dead")
    dead.add("a", "step", {"name": "a"})
    dead.add("b", "step", {"name": "b"}, after=["a"])
    client.submit(dead)
    soft = Dag(dag_id="soft")
    soft.add("a", "step", {"name": "a"})
    soft.add("b", "step", {"name": "b"}, after={"a": EdgePolicy.CONTINUE})
    client.submit(soft)
    for job_id in ("dead/a", "soft/a"):
        broker.fail(take(job_id), PermanentError("bad input"))
    client.submit(chain("fresh", idem="fresh-key"))
    single = Dag(dag_id="single")
    single.add("only", "step", {"name": "only"})
    client.submit(single)
    with open(sys.argv[2], "w") as f:
        json.dump({"schema": 1, "made_by": "c2e3b44", "keys": dump(r)}, f, indent=0, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
