-- cancel_dag: stop every pending job of a DAG, in bounded steps. Running jobs are
-- flagged; their workers see the flag on the next lease extension and stop them.
-- KEYS[1] namespace prefix
-- ARGV[1] dag id, ARGV[2] jobs examined per step (default 1000)
-- Returns {jobs cancelled by this step, running jobs flagged by this step, done (1|0)},
-- or an error if the DAG is unknown. The caller repeats the call until done.
--
-- The first step marks the DAG cancelled, so nothing new joins it (add_children, a
-- building submit and release_jobs check that state); each step walks part of the DAG's
-- job set with SSCAN, whose cursor is kept in the DAG hash. A job claimed between two
-- steps is found running by a later step and flagged, so once the last step returns no
-- job of the DAG can be claimed. A 100,000-job DAG is 100 steps of a few ms each instead of
-- one script that holds Redis for seconds.
--@include common.lua
local dag = ARGV[1]
local budget = tonumber(ARGV[2] or '1000')
local d = redis.call('HMGET', k_dag(dag), 'state', 'cancel_cursor')
local state, cursor = d[1], d[2]
if not state then return redis.error_reply('unknown DAG ' .. dag) end
unquiet(dag)  -- before the job or DAG changes (common.lua)
if state == 'cancelled' then
  if not cursor or cursor == 'done' then return {0, 0, 1} end -- already cancelled
elseif state == 'running' or state == 'building' then
  redis.call('HSET', k_dag(dag), 'state', 'cancelled', 'cancel_cursor', '0')
  redis.call('ZREM', k_dags_building(), dag)
  cursor = '0'
else
  return {0, 0, 1} -- finished
end
local now = now_ms()
local cancelled, running = 0, 0
local page = redis.call('SSCAN', k_dag_jobs(dag), cursor, 'COUNT', budget)
for _, id in ipairs(page[2]) do
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
local total_c = redis.call('HINCRBY', k_dag(dag), 'cancel_jobs', cancelled)
local total_r = redis.call('HINCRBY', k_dag(dag), 'cancel_running', running)
if page[1] ~= '0' then
  redis.call('HSET', k_dag(dag), 'cancel_cursor', page[1])
  return {cancelled, running, 0}
end
redis.call('HSET', k_dag(dag), 'cancel_cursor', 'done')
redis.call('DEL', k_dag_leaves(dag))
emit(dag, 'cancelled', '', 'jobs', total_c, 'running', total_r)
emit_global(dag, 'cancelled', '')
settle_dag(dag, now)
return {cancelled, running, 1}
