-- complete: store a job's result, release parents whose children are all done, and
-- optionally claim the worker's next job in the same round trip.
-- KEYS[1] namespace prefix
-- ARGV[1] job id, ARGV[2] lease token, ARGV[3] result (JSON)
-- ARGV[4] worker id ('' = do not claim), ARGV[5] next token, ARGV[6] lease ms,
-- ARGV[7..] queues
-- Returns {status, next job or false}; status 1 = accepted, 0 = discarded: the token no
-- longer owns the job (it was reclaimed after a stall), so its effects apply once.
--@include common.lua
--@include settle.lua
--@include claim_next.lua
local id, token, result = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local f = redis.call('HMGET', k_job(id), 'owner', 'dag', 'queue', 'pct', 'root', 'state')
local status = 0
if f[1] == token and f[6] == 'active' then
  status = 1
  local dag = f[2]
  redis.call('HSET', k_job(id), 'state', 'completed', 'result', result, 'finished', now,
    'owner', '', 'pct', 100)
  redis.call('ZREM', k_active(f[3]), id)
  redis.call('HSET', k_progress(id), 'percent', 100)
  redis.call('HINCRBYFLOAT', k_dag(dag), 'pct_sum', 100 - (tonumber(f[4]) or 0))
  redis.call('HINCRBY', k_dag(dag), 'completed', 1)
  if f[5] == '1' then redis.call('HINCRBY', k_dag(dag), 'roots_done', 1) end
  emit(dag, 'completed', id)
  release_parents(id, result, now)
  settle_dag(dag, now)
end
local nxt = false
if ARGV[4] ~= '' then
  local queues = {}
  for i = 7, #ARGV do queues[#queues + 1] = ARGV[i] end
  nxt = claim_next(queues, ARGV[4], ARGV[5], tonumber(ARGV[6]), now)
end
return {status, nxt}
