-- prune: retention, one bounded step. Deletes finished DAGs beyond the count limit or
-- older than the age limit, oldest first, with all their jobs and events; trims the
-- dead-letter queue and the fleet event stream the same way. At most ARGV[5] jobs are
-- deleted per call, so a 100,000-job DAG is deleted over many calls and none blocks
-- Redis; a DAG being deleted is marked `pruning` first, so nothing reopens it halfway.
-- Working calls are spaced fleet-wide (PRUNE_GAP_MS), so many nodes pruning at once
-- leave Redis free between steps; a call inside the gap does nothing and says when.
-- KEYS[1] namespace prefix
-- ARGV[1] max completed DAGs, ARGV[2] max age of completed (ms),
-- ARGV[3] max failed DAGs, ARGV[4] max age of failed (ms), ARGV[5] job budget,
-- ARGV[6] max dead-letter entries, ARGV[7] max age of dead-letter entries (ms),
-- ARGV[8] idempotency window after a DAG finishes (ms, kept for settle_dag),
-- ARGV[9] max age of fleet events (ms), ARGV[10] age after which a DAG still building
-- was abandoned by its submit (ms)
-- Returns {DAGs deleted, jobs deleted, dead-letter entries trimmed, events trimmed,
--          more (1: call again), wait before the next call (ms)}.
--@include common.lua
local PRUNE_GAP_MS = 10
local now = now_ms()
local budget = tonumber(ARGV[5])
local cfg = redis.call('HMGET', k_retention(), 'next_step', 'idem_ms')
if cfg[2] ~= ARGV[8] then redis.call('HSET', k_retention(), 'idem_ms', ARGV[8]) end
local next_step = tonumber(cfg[1]) or 0
if now < next_step then return {0, 0, 0, 0, 1, next_step - now} end
local dags, jobs, dead, events, more = 0, 0, 0, 0, 0

local function due(set, max_count, max_age)
  local oldest = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if not oldest[1] then return nil end
  if tonumber(oldest[2]) > now - max_age and redis.call('ZCARD', set) <= max_count then
    return nil
  end
  return oldest[1]
end

local function prune_set(set, max_count, max_age)
  while true do
    local dag = due(set, max_count, max_age)
    if not dag then return end
    if budget <= 0 then more = 1; return end
    if not redis.call('HGET', k_dag(dag), 'pruning') then
      redis.call('HSET', k_dag(dag), 'pruning', now)
      release_idem(dag)
    end
    local ids = redis.call('SPOP', k_dag_jobs(dag), budget)
    for _, id in ipairs(ids) do
      redis.call('UNLINK', k_job(id), k_progress(id), k_parents(id), k_deps(id), k_results(id))
      redis.call('ZREM', k_dead(), id)
    end
    jobs = jobs + #ids
    budget = budget - #ids
    if redis.call('EXISTS', k_dag_jobs(dag)) == 0 then
      redis.call('UNLINK', k_dag(dag), k_dag_events(dag))
      redis.call('ZREM', set, dag)
      dags = dags + 1
      budget = budget - 1
    end
  end
end

-- A dead-letter entry is trimmed from the queue only; its job stays with its DAG (for
-- `status`) until the DAG itself is pruned.
local function trim_dead(max_count, max_age)
  local key = k_dead()
  local n = redis.call('ZCARD', key)
  if n == 0 then return end
  local excess = math.max(n - max_count, redis.call('ZCOUNT', key, '-inf', now - max_age))
  if excess <= 0 then return end
  local take = math.min(excess, math.max(budget, 0))
  if take < excess then more = 1 end
  if take == 0 then return end
  redis.call('ZREMRANGEBYRANK', key, 0, take - 1)
  dead = dead + take
  budget = budget - take
end

local function trim_events(max_age)
  local key = k_events()
  if budget <= 0 or redis.call('EXISTS', key) == 0 then return end
  local limit = budget * 100
  events = redis.call('XTRIM', key, 'MINID', '~', math.max(0, now - max_age) .. '-0', 'LIMIT', limit)
  if events >= limit then more = 1 end
end

-- A submit killed while writing a large DAG in steps leaves it `building`: nothing of it
-- is queued, so it would never finish. Once abandoned it is closed as cancelled and then
-- pruned as failed DAGs are.
local function close_abandoned(max_age)
  local key = k_dags_building()
  for _, dag in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now - max_age, 'LIMIT', 0, 10)) do
    redis.call('ZREM', key, dag)
    if redis.call('HGET', k_dag(dag), 'state') == 'building' then
      redis.call('HSET', k_dag(dag), 'state', 'cancelled', 'finished', now,
        'cancel_cursor', 'done')
      redis.call('DEL', k_dag_leaves(dag))
      redis.call('ZADD', k_dags_failed(), now, dag)
      local hook = redis.call('HGET', k_dag(dag), 'webhook')
      local ev = hook and open_delivery(dag, 'cancelled', now, get_long(k_dag(dag), 'webhook', hook))
      if ev then redis.call('HSET', k_dag(dag), 'webhook_event', ev) end
      emit(dag, 'dag_cancelled', '', 'reason', 'its submit stopped while writing it')
      dags = dags + 1
    end
  end
end

close_abandoned(tonumber(ARGV[10] or '3600000'))
prune_set(k_dags_done(), tonumber(ARGV[1]), tonumber(ARGV[2]))
prune_set(k_dags_failed(), tonumber(ARGV[3]), tonumber(ARGV[4]))
trim_dead(tonumber(ARGV[6]), tonumber(ARGV[7]))
trim_events(tonumber(ARGV[9]))
if dags + jobs + dead + events > 0 then
  redis.call('HSET', k_retention(), 'next_step', now + PRUNE_GAP_MS)
end
return {dags, jobs, dead, events, more, more == 1 and PRUNE_GAP_MS or 0}
