"""What one redis.call argument costs the server in each form a transition can give it:
text, a count taken from a Lua table, a Lua number, and string.format('%d') of it, for a
small count (3) and a time in ms. Counted by valgrind (callgrind) over N HSETs from one
script, less the same loop's HSET of text; instructions do not move with this VM's noise.

    python benchmarks/lua_arg_cost.py [--server /usr/bin/redis-server] [--n 20000]

Redis before 7.2 formats a number argument with snprintf("%.17g"); Redis 7.2 and Valkey
print a whole number with ll2string. pipeline/scripts/includes/common.lua (int, num)
chooses the form from this. Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import CallgrindServer

SCRIPT = """
local n, form = tonumber(ARGV[1]), ARGV[2]
local COUNTS = {'1', '2', '3'}
for i = 1, n do
  if form == 'text' then redis.call('HSET', KEYS[1], 'f', '3')
  elseif form == 'count from a table' then redis.call('HSET', KEYS[1], 'f', COUNTS[3])
  elseif form == 'number, 3' then redis.call('HSET', KEYS[1], 'f', 3)
  elseif form == "string.format('%d', 3)" then
    redis.call('HSET', KEYS[1], 'f', string.format('%d', 3))
  elseif form == 'number, a time in ms' then redis.call('HSET', KEYS[1], 'f', 1796217446565)
  elseif form == "string.format('%d', time)" then
    redis.call('HSET', KEYS[1], 'f', string.format('%d', 1796217446565))
  end
end
"""
FORMS = [
    "text",
    "count from a table",
    "number, 3",
    "string.format('%d', 3)",
    "number, a time in ms",
    "string.format('%d', time)",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="/usr/bin/redis-server")
    ap.add_argument("--n", type=int, default=20000)
    a = ap.parse_args()
    srv = CallgrindServer(a.server)
    try:
        info = srv.r.info("server")
        name = (
            f"valkey {info['valkey_version']}"
            if "valkey_version" in info
            else f"redis {info['redis_version']}"
        )
        sha = srv.r.script_load(SCRIPT)
        per: dict[str, float] = {}
        for form in FORMS:
            srv.r.evalsha(sha, 1, "lua-arg-cost", 10, form)
            total, _ = srv.count(
                functools.partial(srv.r.evalsha, sha, 1, "lua-arg-cost", a.n, form)
            )
            per[form] = total / a.n
        print(f"{name}: server instructions per HSET from a script, N={a.n}")
        for form in FORMS:
            print(f"  {form:28} {per[form]:7,.0f}  ({per[form] - per['text']:+,.0f} against text)")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
