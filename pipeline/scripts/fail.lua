-- fail: a job raised. Retry it after the given delay while attempts remain, or move it to
-- the dead-letter queue (at once when the error is permanent).
-- KEYS[1] namespace prefix
-- ARGV[1] job id, ARGV[2] lease token, ARGV[3] error (JSON: type, message, traceback,
-- worker), ARGV[4] retry delay ms, ARGV[5] '1' if permanent
-- Returns 'retry', 'dead', 'cancelled' (its DAG was cancelled) or 'discarded' (the
-- token no longer owns the job).
--@include common.lua
--@include settle.lua
local id, token, err = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local f = redis.call('HMGET', k_job(id), 'owner', 'queue', 'attempts', 'max_attempts',
  'state', 'cancel')
if f[1] ~= token or f[5] ~= 'active' then return 'discarded' end
local dag, q = dag_of(id), f[2]
unquiet(dag)  -- before the job or DAG changes (common.lua)
redis.call('ZREM', k_active(q), id)
reset_pct(id, dag)
if f[6] == '1' then
  -- Its DAG was cancelled while it ran: no retry, no dead-letter entry.
  redis.call('HSET', k_job(id), 'state', 'cancelled', 'finished', now, 'owner', '',
    'error', err)
  job_ended(dag, id, 'cancelled', now)
  return 'cancelled'
end
if ARGV[5] == '1' or tonumber(f[3]) >= tonumber(f[4]) then
  kill_job(id, dag, err, now)
  return 'dead'
end
local delay = tonumber(ARGV[4])
redis.call('HSET', k_job(id), 'owner', '', 'error', err, 'run_at', now + delay)
emit(dag, 'failed', id, 'error', err, 'attempt', f[3])
emit(dag, 'retried', id, 'delay_ms', delay, 'attempt', f[3])
enqueue(id, now)
return 'retry'
