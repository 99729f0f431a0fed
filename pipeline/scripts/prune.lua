-- prune: retention. Deletes finished DAGs beyond the count limit or older than the age
-- limit, oldest first, with all their jobs and events. Work per call is bounded by a key
-- budget, so pruning a 100,000-job DAG never blocks Redis; call it again while it
-- returns a positive count.
-- KEYS[1] namespace prefix
-- ARGV[1] max completed DAGs, ARGV[2] max age of completed (ms),
-- ARGV[3] max failed DAGs, ARGV[4] max age of failed (ms), ARGV[5] job budget
-- Returns the number of jobs deleted.
--@include common.lua
local now = now_ms()
local budget = tonumber(ARGV[5])
local deleted = 0

local function prune_set(set, max_count, max_age)
  while budget > 0 do
    local oldest = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
    if not oldest[1] then return end
    local n = redis.call('ZCARD', set)
    if n <= max_count and tonumber(oldest[2]) >= now - max_age then return end
    local dag = oldest[1]
    local ids = redis.call('SPOP', k_dag_jobs(dag), budget)
    for _, id in ipairs(ids) do
      redis.call('DEL', k_job(id), k_progress(id), k_parents(id), k_deps(id), k_results(id))
      redis.call('ZREM', P .. 'dead', id)
    end
    deleted = deleted + #ids
    budget = budget - #ids
    if redis.call('SCARD', k_dag_jobs(dag)) == 0 then
      local idem = redis.call('HGET', k_dag(dag), 'idem')
      if idem and idem ~= '' then redis.call('DEL', P .. 'idem:' .. idem) end
      redis.call('DEL', k_dag(dag), k_dag_events(dag))
      redis.call('ZREM', set, dag)
      budget = budget - 1
    end
  end
end

prune_set(P .. 'dags:done', tonumber(ARGV[1]), tonumber(ARGV[2]))
prune_set(P .. 'dags:failed', tonumber(ARGV[3]), tonumber(ARGV[4]))
return deleted
