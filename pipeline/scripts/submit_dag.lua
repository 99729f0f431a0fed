-- submit_dag: write a whole DAG atomically and enqueue its leaves.
-- KEYS[1] namespace prefix
-- ARGV[1] dag id, ARGV[2] idempotency key ('' for none), ARGV[3] dag meta (JSON),
-- ARGV[4] jobs (JSON list, children before parents; see create_jobs.lua),
-- ARGV[5] request id (kept with the DAG: a resent submit finds its own DAG)
-- Returns {dag_id, created (1) | existing (0)}.
--@include common.lua
--@include create_jobs.lua
local dag, idem, meta, req = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
if idem ~= '' then
  local existing = redis.call('GET', P .. 'idem:' .. idem)
  if existing and redis.call('EXISTS', k_dag(existing)) == 1 then return {existing, 0} end
end
if redis.call('EXISTS', k_dag(dag)) == 1 then
  if req and redis.call('HGET', k_dag(dag), 'req') == req then return {dag, 1} end
  return redis.error_reply('DAG ' .. dag .. ' already exists')
end
local now = now_ms()
local jobs = cjson.decode(ARGV[4])
redis.call('HSET', k_dag(dag), 'id', dag, 'state', 'running', 'total', #jobs,
  'open', #jobs, 'dead', 0, 'upstream', 0, 'cancelled', 0, 'roots', 0, 'roots_failed', 0,
  'pct_sum', 0, 'created', now, 'finished', '', 'meta', meta, 'idem', idem, 'req', req or '')
if idem ~= '' then redis.call('SET', P .. 'idem:' .. idem, dag) end
local roots = create_jobs(dag, jobs, now)
redis.call('HSET', k_dag(dag), 'roots', #roots)
emit(dag, 'submitted', '', 'jobs', #jobs)
emit_global(dag, 'submitted', '', 'jobs', #jobs)
return {dag, 1}
