-- Claim one job for a worker (needs common.lua).
--
-- Queues are tried in the order given. Within a queue the wait set is ordered by
-- priority, then FIFO. A paused queue hands out nothing; a rate-limited queue hands out
-- nothing until its window resets. Due delayed jobs are promoted first, so no separate
-- timer process is needed; the cost is one ZRANGEBYSCORE, O(log n).
--
-- Returns {wake_in_ms, job, job, ...}: each job a list of fields (see activate), and when
-- none was found, how long the worker may block before a delayed job or a rate-limit
-- window falls due (-1: nothing scheduled).

local CLAIM_FIELDS = {'stage', 'params', 'attempts', 'max_attempts', 'timeout_ms', 'cost',
  'backoff', 'has_deps', 'quiet'}

-- One claimed job as the worker reads it (pipeline/jobs.py ClaimedJob.from_reply); `f`
-- holds CLAIM_FIELDS from index `at`.
local function claimed(id, q, token, f, at, attempt)
  local results = {}
  if f[at + 7] == '1' then results = redis.call('HGETALL', k_results(id)) end
  local slash = string.find(id, '/', 1, true)
  return {id, q, token, f[at], get_long(k_job(id), 'params', f[at + 1]),
    string.sub(id, 1, slash - 1), string.sub(id, slash + 1), attempt, f[at + 3], f[at + 4],
    f[at + 5] or 1, f[at + 6] or '', results}
end

-- Returns how many were promoted and the earliest due time still delayed (-1: none),
-- which it records as the queue's next_due.
local function promote_due(q, now, limit)
  local due = redis.call('ZRANGEBYSCORE', k_delayed(q), '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', k_delayed(q), id)
    redis.call('HSET', k_job(id), 'run_at', 0)
    enqueue(id, now)
  end
  local first = redis.call('ZRANGE', k_delayed(q), 0, 0, 'WITHSCORES')
  local next_due = first[2] and tonumber(first[2]) or -1
  redis.call('HSET', k_meta(q), 'next_due', next_due)
  return #due, next_due
end

local function activate(id, q, worker, token, lease_ms, now)
  local job = k_job(id)
  local f = redis.call('HMGET', job, unpack(CLAIM_FIELDS))
  local attempt = (tonumber(f[3]) or 0) + 1
  redis.call('HSET', job, 'state', 'active', 'owner', token, 'worker', worker,
    'started', int(now), 'attempts', int(attempt))
  redis.call('ZADD', k_active(q), int(now + lease_ms), id)
  -- a quiet DAG's `active` is read from the fields just written (common.lua)
  if not f[9] then emit_loud(dag_of(id), 'active', id, 'worker', worker, 'attempt', attempt) end
  return claimed(id, q, token, f, 1, attempt)
end

-- What a resent claim returns (see request.lua): the jobs its token still holds, read
-- back from their hashes. The request record keeps only {wake, {id, queue, token}...},
-- not the claimed jobs' params, which made recording a 32-job claim cost 18 % more
-- server time per job. A job reclaimed since (its lease lapsed) is not handed out again.
local function compact_claim(reply)
  if not reply then return false end
  local out = {reply[1]}
  for i = 2, #reply do out[i] = {reply[i][1], reply[i][2], reply[i][3]} end
  return out
end

local function expand_claim(rec)
  if not rec then return false end
  local out = {rec[1]}
  for i = 2, #rec do
    local id, q, token = rec[i][1], rec[i][2], rec[i][3]
    local f = redis.call('HMGET', k_job(id), 'owner', 'state', unpack(CLAIM_FIELDS))
    if f[1] == token and f[2] == 'active' then
      out[#out + 1] = claimed(id, q, token, f, 3, tonumber(f[5]))
    end
  end
  return out
end

local function compact_complete(reply) return {reply[1], compact_claim(reply[2])} end
local function expand_complete(rec) return {rec[1], expand_claim(rec[2])} end

-- Claims up to `count` jobs; tokens are `token .. '/' .. i`, unique per claim.
local function claim_next(queues, worker, token, lease_ms, now, count)
  local out = {-1}
  local wake_in = -1
  for _, q in ipairs(queues) do
    local meta = redis.call('HMGET', k_meta(q), 'paused', 'rate_max', 'rate_ms', 'max_active',
      'hold_until', 'next_due')
    local hold = tonumber(meta[5]) or 0
    -- next_due unknown (never recorded) reads the delayed set once; a stale early value
    -- (a delayed job was cancelled) only costs that read.
    local next_due = tonumber(meta[6])
    if hold > now then
      -- an external service throttled this queue: nobody takes from it until then
      if wake_in < 0 or hold - now < wake_in then wake_in = hold - now end
    elseif meta[1] ~= '1' then
      if not next_due or (next_due >= 0 and next_due <= now) then
        local promoted
        promoted, next_due = promote_due(q, now, 100)
      end
      local rate_max = tonumber(meta[2])
      local room = count - #out + 1
      local max_active = tonumber(meta[4])
      if max_active then
        -- fleet-wide concurrency cap: leases in the active set are the running jobs
        local free = max_active - redis.call('ZCARD', k_active(q))
        if free < room then room = math.max(free, 0) end
      end
      if rate_max and room > 0 then
        local used = tonumber(redis.call('GET', k_rate(q)) or '0')
        if used + room > rate_max then room = rate_max - used end
        if room <= 0 then
          room = 0
          local ttl = redis.call('PTTL', k_rate(q))
          if ttl > 0 and (wake_in < 0 or ttl < wake_in) then wake_in = ttl end
        end
      end
      if room > 0 then
        local popped = redis.call('ZPOPMIN', k_wait(q), int(room))
        local got = #popped / 2
        if got > 0 then
          if rate_max then
            if redis.call('INCRBY', k_rate(q), got) == got then
              redis.call('PEXPIRE', k_rate(q), tonumber(meta[3]) or 1000)
            end
          end
          -- Chain-wake: another idle worker may take the next job. A full pop says more
          -- may wait; checking with ZCARD would cost a call on every claim.
          if got == room then wake(q) end
          for i = 1, #popped, 2 do
            out[#out + 1] = activate(popped[i], q, worker, token .. '/' .. int(#out), lease_ms,
              now)
          end
        end
      end
      if #out > count then return out end
      if next_due >= 0 then
        local d = next_due - now
        if d < 1 then d = 1 end
        if wake_in < 0 or d < wake_in then wake_in = d end
      end
    end
  end
  out[1] = wake_in
  return out
end
