"""A prepared call (``Scripts.prepare``, a busy worker's complete+claim) sends the bytes
hiredis packs for the same arguments, and runs as ``Scripts.run`` does: the same
transition, reply and request ids, and after a restart that lost the functions, the
library loaded again."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest
import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.keys import Keys
from pipeline.model import Dag
from pipeline.registry import Registry, stage
from pipeline.scripts import REQUEST_ID, SLOT, Prepared

CASES = [
    # the worker's call: three slots, its id, the request id, the queues
    (
        (1, SLOT, SLOT, SLOT, "host:12:ab12cd", REQUEST_ID, 30000, 1, "default", "q@nvenc"),
        ("d1/w", "c9:41/1", '{"out":"a.jpg","n":[1,2.5]}'),
    ),
    # a result that is not ASCII: its length in bytes, by hiredis
    ((1, SLOT, SLOT, SLOT), ("d1/w", "t/1", '"caf\u00e9 \u2713"')),
    # fixed arguments an f-string or RESP could misread
    (("{x}", "'''", '"', "\\", "a\r\nb", "{{H}}", SLOT), ("{C0}",)),
    # no slot; a slot first; an empty value; the request id between slots
    (("a", REQUEST_ID), ()),
    ((SLOT, "b"), ("",)),
    ((SLOT, REQUEST_ID, SLOT), ("x", "y")),
]


@pytest.mark.parametrize(("args", "values"), CASES)
@pytest.mark.parametrize("mode", ["n", "r"])
def test_a_prepared_request_is_the_bytes_hiredis_packs(
    args: tuple[Any, ...], values: tuple[str, ...], mode: str
) -> None:
    call = Prepared("mp_0123456789_f", "f", "{ns}:", args)
    it = iter(values)
    argv = ["c9:41" if a is REQUEST_ID else next(it) if a is SLOT else a for a in args]
    want = hiredis.pack_command(("FCALL", "mp_0123456789_f", 1, "{ns}:", *argv, "c9:41", mode))
    assert call.pack(values, "c9:41", mode) == want


def _work(registry: Registry) -> None:
    @stage("work", registry=registry)
    def work(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        return 1


def _submit(client: Client, n: int, **opts: Any) -> list[Dag]:
    dags = []
    for i in range(n):
        dag = Dag()
        dag.add("w", "work", {"i": i}, **opts)
        client.submit(dag)
        dags.append(dag)
    return dags


def test_complete_next_records_the_result_and_claims_as_complete_many_does(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    _work(registry)
    dags = _submit(client, 3, attempts=4, timeout=90)
    broker = Broker(r, namespace=namespace, registry=registry)
    (first,), _ = broker.claim(["default"], 1)
    accepted, nxt = broker.complete_next(first, {"w": "é"}, ["default"])
    assert accepted is True and len(nxt) == 1
    job = nxt[0]
    assert job.id == dags[1].job_id("w") and job.params == {"i": 1}
    assert (job.attempt, job.max_attempts, job.timeout, job.cost) == (1, 4, 90.0, 1)
    assert client.job(first.id)["result"] == {"w": "é"}  # type: ignore[index]
    assert client.job(job.id)["owner"] == job.token  # type: ignore[index]
    # the same token again is a stale completion: discarded, and nothing claimed for it
    accepted, again = broker.complete_next(first, 2, ["default"])
    assert accepted is False
    assert client.job(first.id)["result"] == {"w": "é"}  # type: ignore[index]
    # and a claim rides on it still: the third job
    assert [j.id for j in again] == [dags[2].job_id("w")]
    keys = Keys(namespace)
    assert r.zcard(keys.active("default")) == 2 and r.zcard(keys.wait("default")) == 0


def test_complete_next_loads_the_functions_again_after_a_restart_lost_them(
    r: redis.Redis, namespace: str, client: Client, registry: Registry
) -> None:
    _work(registry)
    _submit(client, 2)
    broker = Broker(r, namespace=namespace, registry=registry)
    (first,), _ = broker.claim(["default"], 1)
    r.function_flush()
    accepted, nxt = broker.complete_next(first, 1, ["default"])
    assert accepted is True and len(nxt) == 1
    assert client.job(first.id)["state"] == "completed"  # type: ignore[index]
