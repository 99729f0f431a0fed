-- release_jobs: a worker hands back jobs it claimed but will not finish now. They return
-- to their queue without spending an attempt: at once (graceful shutdown, prefetched jobs
-- never started), or after a delay when a service they need is down (deferred: the DAG
-- shows what they wait for).
-- KEYS[1] namespace prefix
-- ARGV[1] delay ms (0 = at once), ARGV[2] reason ('' = none), then pairs: job id, token
-- A job whose DAG was cancelled while it was held ends cancelled instead: handing it
-- back must not bring a cancelled DAG's work back to life.
-- Returns the number released (cancelled ones included).
--@include common.lua
local now = now_ms()
local delay, reason = tonumber(ARGV[1]), ARGV[2]
local n = 0
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', k_job(id), 'owner', 'state', 'queue', 'attempts', 'cancel')
  local dag = dag_of(id)
  if f[1] == token and f[2] == 'active' then unquiet(dag) end  -- before changes (common.lua)
  if f[1] == token and f[2] == 'active' and f[5] == '1' then
    redis.call('ZREM', k_active(f[3]), id)
    reset_pct(id, dag)
    redis.call('HSET', k_job(id), 'state', 'cancelled', 'finished', now, 'owner', '')
    job_ended(dag, id, 'cancelled', now)
    n = n + 1
  elseif f[1] == token and f[2] == 'active' then
    redis.call('ZREM', k_active(f[3]), id)
    reset_pct(id, dag)
    redis.call('HSET', k_job(id), 'owner', '', 'attempts', math.max(0, (tonumber(f[4]) or 0) - 1),
      'run_at', delay > 0 and now + delay or 0, 'waiting_for', reason)
    if delay > 0 then
      emit(dag, 'deferred', id, 'reason', reason, 'delay_ms', delay)
    else
      emit(dag, 'released', id)
    end
    enqueue(id, now)
    n = n + 1
  end
end
return n
