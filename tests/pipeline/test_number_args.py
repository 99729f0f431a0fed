"""The numbers the transitions hand to redis.call are stored as the same digits on every
server: as text built in Lua where the server would format a number slowly (Redis before
7.2), as the number itself where the server prints whole numbers fast (Redis 7.2, Valkey).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
import redis

from benchmarks.common import ScratchServer
from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.model import Backoff, Dag
from pipeline.registry import Registry, stage
from tests.helpers import run_dag

_SWITCH = "local SLOW_NUMBERS = (redis.REDIS_VERSION_NUM or 0) < 0x070200\n"


def _common(slow: bool) -> str:
    text = (resources.files("pipeline.scripts") / "includes" / "common.lua").read_text()
    assert text.count(_SWITCH) == 1
    return text.replace(_SWITCH, f"local SLOW_NUMBERS = {'true' if slow else 'false'}\n")


# (what the script is given, as Lua source; the digits Redis must store)
WHOLE = [
    ("0", "0"),
    ("7", "7"),
    ("99", "99"),
    ("100", "100"),
    ("30000", "30000"),
    ("1796217446565", "1796217446565"),  # a time in ms
    ("1000 * 1099511627776 + 20001", "1099511627796001"),  # a wait-set score
    ("-1", "-1"),
]
SENT = [  # numbers a client sent (num): a fraction is passed on, never cut
    ("3", "3"),
    ("2.5", "2.5"),
    ("-0.5", "-0.5"),
    ("3600000", "3600000"),
    ("1e16", "10000000000000000"),  # past num's range: the server's own formatting
]


@pytest.mark.parametrize("slow", [True, False], ids=["text", "number"])
def test_numbers_are_stored_as_their_digits_either_way(
    slow: bool, r: redis.Redis, namespace: str
) -> None:
    calls = (
        "\n".join(f"put('w{i}', int({src}))" for i, (src, _) in enumerate(WHOLE))
        + "\n"
        + "\n".join(f"put('s{i}', num({src}))" for i, (src, _) in enumerate(SENT))
    )
    script = _common(slow) + (
        "local types = {}\n"
        "local function put(field, v)\n"
        "  types[#types + 1] = type(v)\n"
        "  redis.call('HSET', KEYS[1], field, v)\n"
        "end\n"
        f"{calls}\n"
        f"{calls.replace('put(', 'put(2 .. ')}\n"  # a count's text comes from the table now
        "return types\n"
    )
    key = f"{namespace}:numbers"
    types = [t.decode() for t in r.eval(script, 1, key)]
    fields: Any = r.hgetall(key)
    stored = {k.decode(): v.decode() for k, v in fields.items()}
    want = {f"w{i}": digits for i, (_, digits) in enumerate(WHOLE)}
    want |= {f"s{i}": digits for i, (_, digits) in enumerate(SENT)}
    assert stored == want | {"2" + k: v for k, v in want.items()}
    whole_type = "string" if slow else "number"
    expected_types = [whole_type] * len(WHOLE) + [whole_type, "number", "number", whole_type]
    expected_types += ["number"]
    assert types == expected_types * 2


def _old_redis() -> str | None:
    """Debian's redis-server when it is older than 7.2 (the text path); .ci/run installs it."""
    exe = shutil.which("redis-server")
    if not exe:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    version = out.split("v=", 1)[1].split()[0] if "v=" in out else ""
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return exe if len(parts) == 2 and (7, 0) <= parts < (7, 2) else None


@pytest.fixture
def old_redis() -> Iterator[redis.Redis]:
    exe = _old_redis()
    if exe is None:
        pytest.skip("needs a redis-server 7.0 or 7.1 (Debian's)")
    srv = ScratchServer(exe)
    try:
        yield srv.r
    finally:
        srv.stop()


def test_a_dag_runs_on_redis_7_0_where_numbers_go_as_text(old_redis: redis.Redis) -> None:
    # Every number path end to end on the server that gets text: a fan-in DAG (pending
    # counts, children released into the wait set), priorities and a delayed job (scores),
    # a retried job (attempts), and the times written on the way.
    registry = Registry()
    ran: list[str] = []
    failed_once: set[str] = set()

    @stage("step", registry=registry, attempts=3, backoff=Backoff(base=0.01, jitter=0))
    def step(ctx: Any, params: dict[str, Any], inputs: dict[str, Any]) -> int:
        ran.append(params["name"])
        if params.get("flaky") and ctx.job_id not in failed_once:
            failed_once.add(ctx.job_id)
            raise RuntimeError("once")
        return int(sum(inputs.values())) + 1

    client = Client(old_redis, namespace="old", registry=registry)
    broker = Broker(old_redis, namespace="old", registry=registry, lease=5.0)
    dag = Dag()
    dag.add("low", "step", {"name": "low"}, priority=-5)
    dag.add("high", "step", {"name": "high", "flaky": True}, priority=7)
    dag.add("later", "step", {"name": "later"}, delay=0.3)
    dag.add("join", "step", {"name": "join"}, after=["low", "high", "later"])
    client.submit(dag)

    high = old_redis.hgetall(f"{{old}}:job:{dag.job_id('high')}")
    assert high[b"prio"] == b"7" and high[b"max_attempts"].isdigit()
    assert high[b"created"].isdigit() and len(high[b"created"]) == 13
    assert old_redis.hget(f"{{old}}:job:{dag.job_id('join')}", "pending") == b"3"
    waiting: Any = old_redis.zrange("{old}:q:default:wait", 0, -1, withscores=True)
    scores = dict(waiting)
    assert scores[dag.job_id("high").encode()] < scores[dag.job_id("low").encode()]

    assert run_dag(client, broker, dag.id, timeout=30) == "completed"
    assert ran[0] == "high" and ran[-1] == "join"  # priority order, the join last
    assert sorted(ran) == ["high", "high", "join", "later", "low"]
    job = client.job(dag.job_id("join"))
    assert job is not None and job["result"] == 4
    assert client.job(dag.job_id("high"))["attempts"] == 2  # type: ignore[index]
    finished = old_redis.hget(f"{{old}}:dag:{dag.id}", "finished")
    assert finished is not None and finished.isdigit() and len(finished) == 13
