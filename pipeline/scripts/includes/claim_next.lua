-- Claim one job for a worker (needs common.lua).
--
-- Queues are tried in the order given. Within a queue the wait set is ordered by
-- priority, then FIFO. A paused queue hands out nothing; a rate-limited queue hands out
-- nothing until its window resets. Due delayed jobs are promoted first, so no separate
-- timer process is needed; the cost is one ZRANGEBYSCORE, O(log n).
--
-- Returns {job fields...} or {false, wake_in_ms}: how long the worker may block before a
-- delayed job or a rate-limit window falls due (-1: nothing scheduled).

local CLAIM_FIELDS = {'stage', 'params', 'dag', 'name', 'attempts', 'max_attempts',
  'timeout_ms', 'cost', 'backoff', 'has_deps'}

local function promote_due(q, now, limit)
  local due = redis.call('ZRANGEBYSCORE', k_delayed(q), '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', k_delayed(q), id)
    redis.call('HSET', k_job(id), 'run_at', 0)
    enqueue(id, now)
  end
  return #due
end

local function activate(id, q, worker, token, lease_ms, now)
  local job = k_job(id)
  redis.call('HINCRBY', job, 'attempts', 1)
  redis.call('HSET', job, 'state', 'active', 'owner', token, 'worker', worker,
    'started', now)
  redis.call('ZADD', k_active(q), now + lease_ms, id)
  local f = redis.call('HMGET', job, unpack(CLAIM_FIELDS))
  emit(f[3], 'active', id, 'worker', worker, 'attempt', f[5])
  local results = {}
  if f[10] == '1' then results = redis.call('HGETALL', k_results(id)) end
  return {id, q, token, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], results}
end

local function claim_next(queues, worker, token, lease_ms, now)
  local wake_in = -1
  for _, q in ipairs(queues) do
    local meta = redis.call('HMGET', k_meta(q), 'paused', 'rate_max', 'rate_ms')
    if meta[1] ~= '1' then
      promote_due(q, now, 100)
      local limited = false
      local rate_max = tonumber(meta[2])
      if rate_max then
        local used = tonumber(redis.call('GET', k_rate(q)) or '0')
        if used >= rate_max then
          limited = true
          local ttl = redis.call('PTTL', k_rate(q))
          if ttl > 0 and (wake_in < 0 or ttl < wake_in) then wake_in = ttl end
        end
      end
      if not limited then
        local popped = redis.call('ZPOPMIN', k_wait(q))
        if popped[1] then
          if rate_max then
            if redis.call('INCR', k_rate(q)) == 1 then
              redis.call('PEXPIRE', k_rate(q), tonumber(meta[3]) or 1000)
            end
          end
          -- Chain-wake: another idle worker may take the next job.
          if redis.call('ZCARD', k_wait(q)) > 0 then wake(q) end
          return activate(popped[1], q, worker, token, lease_ms, now)
        end
      end
      local nxt = redis.call('ZRANGE', k_delayed(q), 0, 0, 'WITHSCORES')
      if nxt[2] then
        local d = tonumber(nxt[2]) - now
        if d < 1 then d = 1 end
        if wake_in < 0 or d < wake_in then wake_in = d end
      end
    end
  end
  return {false, wake_in}
end
