"""What the design costs per job, against two floors, in one run on one server.

    python benchmarks/design_floor.py [--n 10000] [--reps 5] [--server /usr/bin/redis-server]

Three cases, each 2 processes taking one job per round trip, interleaved over ``--reps``:

- ``floor``: BRPOP of a JSON payload with redis-py (the ``floor-brpop-2c`` of
  queue_bench.py): no lease, no result, nothing survives a crash.
- ``lease``: the least a leased queue with exactly-once replies needs, as one FCALL a job
  on the held connection our workers use: TIME, the request record (GETRANGE + SET),
  the completion (HMGET owner/state, HSET state/result/finished, ZREM from the active
  set), the claim (ZPOPMIN, HMGET stage/params, HSET owner/started, ZADD with the lease's
  deadline): 11 commands.
- ``mediapipe``: ``benchmarks/noop_drain.py ... all`` (InlineRunner, prefetch 1, one-job
  DAGs; each process runs until the queue is empty, as the BRPOP and lease loops do),
  which adds what the lease case lacks: the DAG's roll-up and retention index, the fleet's
  event stream, the queue's gates (pause, rate limit, fleet cap, delayed jobs) and the
  job's full spec (attempts, timeout, cost, backoff, child results).

Reports jobs/s (median), the ratio to the floor, the server's microseconds and commands
per job (INFO commandstats), the server process's CPU per job (user + system, /proc),
each worker's own CPU per job (``time.process_time``), and the cores the whole machine
kept busy while the workers ran, with those the hypervisor stole (/proc/stat). The gap between
``lease`` and ``mediapipe`` is what those features cost; the gap between ``floor`` and
``lease`` is what reliability costs.

Then the round trip itself: a PING and its reply between one process and the server, the
two pinned to one CPU, to two CPUs, and as the scheduler places them. Where the cores are
far from all busy, the cycle of a job is waiting, and this prices a wait.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import hiredis
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.common import CpuWindow, ScratchServer  # noqa: E402
from benchmarks.drain_ab import drain  # noqa: E402

PAYLOAD = '{"i":1,"op":"noop","src":"media/clip_000001.mp4"}'

LEASE_LIB = r"""#!lua name=design_floor
local function cycle(keys, args)
  local p = keys[1]
  local t = redis.call('TIME')
  local at = t[1] .. string.sub('00000' .. t[2], -6, -4)
  local req = p .. 'req:' .. args[4]
  local head = redis.call('GETRANGE', req, '0', '24')
  if head ~= '' and string.sub(head, 1, #args[5] + 1) == args[5] .. '=' then
    return {}  -- a resend (never happens here; the read is what is measured)
  end
  if args[1] ~= '' then
    local job = p .. 'job:' .. args[1]
    local f = redis.call('HMGET', job, 'owner', 'state')
    if f[1] == args[2] and f[2] == 'active' then
      redis.call('HSET', job, 'state', 'completed', 'result', args[3], 'finished', at)
      redis.call('ZREM', p .. 'active', args[1])
    end
  end
  local popped = redis.call('ZPOPMIN', p .. 'wait', '1')
  if not popped[1] then return {} end
  local id = popped[1]
  local job = p .. 'job:' .. id
  local f = redis.call('HMGET', job, 'stage', 'params')
  redis.call('HSET', job, 'state', 'active', 'owner', args[5], 'started', at)
  redis.call('ZADD', p .. 'active', string.format('%d', tonumber(at) + 30000), id)
  redis.call('SET', req, args[5] .. '=' .. id, 'PX', '86400000')
  return {id, args[5], f[1], f[2]}
end
redis.register_function('design_floor_cycle', cycle)
"""


def _floor_worker(url: str, q: Any, go: Any) -> None:
    r = redis.Redis.from_url(url)
    go.wait()
    t, done, cpu = time.perf_counter(), 0, time.process_time()
    while True:
        item = r.brpop("floor:q", timeout=0.5)
        if item is None:
            break
        json.loads(item[1])
        done += 1
        last = time.perf_counter()
    q.put((done, t, last, time.process_time() - cpu))


def _lease_worker(url: str, q: Any, go: Any) -> None:
    r = redis.Redis.from_url(url)
    conn: Any = r.connection_pool.make_connection()
    conn.connect()
    client = f"c{os.getpid()}"
    prev, token, seq, done = "", "", 0, 0
    go.wait()
    t = last = time.perf_counter()
    cpu = time.process_time()
    while True:
        seq += 1
        call: Any = ("FCALL", "design_floor_cycle", 1, "df:", prev, token, "null", client, seq)
        conn.send_packed_command([hiredis.pack_command(call)])
        reply = conn.read_response()
        if not reply:
            break
        prev, token = reply[0].decode(), reply[1].decode()
        json.loads(reply[3])
        done += 1
        last = time.perf_counter()
    q.put((done, t, last, time.process_time() - cpu))


def _fill_lease(r: redis.Redis, n: int) -> None:
    p = r.pipeline(transaction=False)
    for i in range(n):
        p.hset(
            f"df:job:{i}",
            mapping={
                "state": "waiting",
                "stage": "noop",
                "queue": "default",
                "max_attempts": 3,
                "timeout_ms": 3600000,
                "created": 1796170798744,
                "params": PAYLOAD,
            },
        )
        p.zadd("df:wait", {str(i): i})
        if i % 1000 == 999:
            p.execute()
    p.execute()


def _pair(target: Any, url: str, window: CpuWindow) -> float:
    ctx = mp.get_context("fork")
    q, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=target, args=(url, q, go)) for _ in range(2)]
    for p in procs:
        p.start()
    time.sleep(0.3)
    window.start()
    go.set()
    res = [q.get() for _ in procs]
    # A floor worker learns the list is empty only when its BRPOP times out (0.5 s idle)
    window.stop(end=max(e for _, _, e, _ in res))
    window.workers_s = sum(c for *_, c in res)
    for p in procs:
        p.join()
    return float(
        sum(d for d, *_ in res) / (max(e for _, _, e, _ in res) - min(s for _, s, *_ in res))
    )


def _server_per_job(r: redis.Redis, n: int) -> tuple[float, float]:
    """Server time (the FCALL's, which includes its commands; else BRPOP's) and commands
    (a script's own commands counted, as queue_bench.py counts them) per job."""
    stats: Any = r.info("commandstats")
    top = stats.get("cmdstat_fcall") or stats.get("cmdstat_brpop") or {"usec": 0}
    calls = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")
    return top["usec"] / n, calls / n


PING = b"*1\r\n$4\r\nPING\r\n"


def _pings(port: int, cpu: int | None, n: int, q: Any) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(200):  # warm
        s.sendall(PING)
        s.recv(64)
    t = time.perf_counter()
    for _ in range(n):
        s.sendall(PING)
        s.recv(64)
    q.put((time.perf_counter() - t) / n * 1e6)


def round_trips(port: int, server_pid: int, reps: int, n: int = 5000) -> dict[str, float]:
    """Microseconds a PING round trip (median of ``reps``): the client and the server
    pinned to one CPU, to two, or placed by the scheduler. Needs two CPUs for the second."""
    cpus = sorted(os.sched_getaffinity(server_pid))
    places: dict[str, tuple[int | None, int | None]] = {"as scheduled": (None, None)}
    if len(cpus) >= 2:
        places["one CPU"] = (cpus[0], cpus[0])
        places["two CPUs"] = (cpus[0], cpus[1])
    ctx = mp.get_context("fork")
    out: dict[str, list[float]] = {k: [] for k in places}
    try:
        for _ in range(reps):
            for name, (server_cpu, client_cpu) in places.items():
                os.sched_setaffinity(server_pid, set(cpus) if server_cpu is None else {server_cpu})
                q = ctx.Queue()
                p = ctx.Process(target=_pings, args=(port, client_cpu, n, q))
                p.start()
                out[name].append(q.get())
                p.join()
    finally:
        os.sched_setaffinity(server_pid, set(cpus))
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000, help="jobs per process")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--server", default="/usr/bin/redis-server")
    a = ap.parse_args()
    srv = ScratchServer(a.server)
    url, r = srv.url, srv.r
    try:
        results: dict[str, list[tuple[float, ...]]] = {}
        cases = ["floor", "lease", "mediapipe"]
        for rep in range(a.reps):
            for case in cases[rep % 3 :] + cases[: rep % 3]:
                r.flushall()
                window = CpuWindow(srv.proc.pid)
                if case == "floor":
                    r.lpush("floor:q", *([PAYLOAD] * (2 * a.n)))
                    r.config_resetstat()
                    rate = _pair(_floor_worker, url, window)
                elif case == "lease":
                    r.function_load(LEASE_LIB, replace=True)
                    _fill_lease(r, 2 * a.n)
                    r.config_resetstat()
                    rate = _pair(_lease_worker, url, window)
                else:
                    rate = drain(str(HERE.parent), url, r, a.n, until_empty=True, window=window)[0]
                us, cmds = _server_per_job(r, 2 * a.n)
                cpu_us = window.proc_s / (2 * a.n) * 1e6
                # a worker's CPU for one of its jobs: both workers' CPU over all the jobs
                worker_us = window.workers_s / (2 * a.n) * 1e6
                row = (rate, us, cmds, cpu_us, worker_us, window.cores, window.steal)
                results.setdefault(case, []).append(row)
                print(
                    f"rep {rep} {case}: {rate:,.0f} jobs/s, server {us:.1f} us and "
                    f"{cmds:.1f} commands a job, server CPU {cpu_us:.0f} us a job, "
                    f"worker CPU {worker_us:.0f} us a job, {window.cores:.2f} cores busy "
                    f"({window.steal:.2f} of them stolen)",
                    flush=True,
                )
        floor = statistics.median(x[0] for x in results["floor"])
        ncpu = len(os.sched_getaffinity(0))
        print(
            f"\n| case | jobs/s (median of {a.reps}) | / floor | server us a job | "
            "commands a job | server CPU us a job | worker CPU us a job | "
            f"cores busy (of {ncpu}) | of them stolen |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        for case in cases:
            xs = results[case]
            rate = statistics.median(x[0] for x in xs)
            print(
                f"| {case} | {rate:,.0f} | {rate / floor:.2f} | "
                + " | ".join(
                    f"{statistics.median(x[i] for x in xs):.{d}f}"
                    for i, d in ((1, 1), (2, 1), (3, 0), (4, 0), (5, 2), (6, 2))
                )
                + " |"
            )
        trips = round_trips(srv.port, srv.proc.pid, a.reps)
        print("\n| PING round trip, client and server on | us (median) |\n|---|---:|")
        for name, us in trips.items():
            print(f"| {name} | {us:.0f} |")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
