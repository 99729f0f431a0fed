-- complete: store job results, release parents whose children are all done, and
-- optionally claim the worker's next jobs in the same round trip.
-- KEYS[1] namespace prefix
-- ARGV[1] n, then n triples: job id, lease token, result (JSON);
-- then worker id ('' = claim nothing), token base, lease ms, count, queues...
-- Returns {n, status per job, then the claim reply (claim_next.lua) when it claimed}, one
-- flat list. Status 1 = accepted, 0 = discarded:
-- the token no longer owns the job (it was reclaimed after a stall), so a job's effects
-- apply once.
--@include common.lua
--@include settle.lua
--@include claim_next.lua
local now, at = clock()
local n = tonumber(ARGV[1])
-- n statuses, then the claim's reply (flat: see claim_next.lua). The nils size the table
-- for a one-job reply at once: growing it one append at a time rehashed it five times,
-- 2 % of a no-op job's server instructions.
local out = {n, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
for i = 0, n - 1 do
  local id, token, result = ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i]
  local f = redis.call('HMGET', k_job(id), 'owner', 'queue', 'pct', 'root', 'state', 'quiet')
  local status = 0
  if f[1] == token and f[5] == 'active' then
    status = 1
    local dag = dag_of(id)
    redis.call('HSET', k_job(id), 'state', 'completed', 'result', result, 'finished', at,
      'owner', '', 'pct', '100')
    redis.call('ZREM', k_active(f[2]), id)
    -- pct_sum holds partial progress of unfinished jobs only; completed ones count 100.
    local old = tonumber(f[3]) or 0
    if old > 0 then redis.call('HINCRBYFLOAT', k_dag(dag), 'pct_sum', -old) end
    local quiet = f[6]  -- its events are read from the hashes (common.lua)
    if not quiet then emit_loud(dag, 'completed', id) end
    if f[4] ~= '1' then release_parents(id, result, now) end
    if quiet == 'p' then
      settle_plain(dag, at)
    elseif redis.call('HINCRBY', k_dag(dag), 'open', '-1') <= 0 then
      settle_dag(dag, now, quiet ~= false)
    end
  end
  out[#out + 1] = status
end
local c = 2 + 3 * n
if ARGV[c] ~= '' then
  claim_next({unpack(ARGV, c + 4)}, ARGV[c], ARGV[c + 1], tonumber(ARGV[c + 2]), now,
    tonumber(ARGV[c + 3]), out, at)
end
return out
