-- cancel_dag: stop every pending job of a DAG. Running jobs are flagged; their workers
-- see the flag on the next lease extension and stop them.
-- KEYS[1] namespace prefix
-- ARGV[1] dag id
-- Returns {jobs cancelled now, jobs running (told to stop)} or an error if unknown.
--@include common.lua
local dag = ARGV[1]
local state = redis.call('HGET', k_dag(dag), 'state')
if not state then return redis.error_reply('unknown DAG ' .. dag) end
local now = now_ms()
if state ~= 'running' then return {0, 0} end -- finished or already cancelled
redis.call('HSET', k_dag(dag), 'state', 'cancelled')
local cancelled, running = 0, 0
for _, id in ipairs(redis.call('SMEMBERS', k_dag_jobs(dag))) do
  local f = redis.call('HMGET', k_job(id), 'state', 'queue')
  local st, q = f[1], f[2]
  if st == 'waiting' or st == 'delayed' or st == 'waiting_children' then
    redis.call('ZREM', k_wait(q), id)
    redis.call('ZREM', k_delayed(q), id)
    redis.call('HSET', k_job(id), 'state', 'cancelled', 'finished', now)
    job_ended(dag, id, 'cancelled', now)
    cancelled = cancelled + 1
  elseif st == 'upstream_failed' then
    -- already terminal, counted as upstream; it counts as cancelled instead
    redis.call('HSET', k_job(id), 'state', 'cancelled')
    redis.call('HINCRBY', k_dag(dag), 'upstream', -1)
    redis.call('HINCRBY', k_dag(dag), 'cancelled', 1)
    cancelled = cancelled + 1
  elseif st == 'active' then
    redis.call('HSET', k_job(id), 'cancel', '1')
    running = running + 1
  end
end
emit(dag, 'cancelled', '', 'jobs', cancelled, 'running', running)
emit_global(dag, 'cancelled', '')
settle_dag(dag, now)
return {cancelled, running}
