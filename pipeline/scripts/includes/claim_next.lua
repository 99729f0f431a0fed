-- Claim one job for a worker (needs common.lua).
--
-- Queues are tried in the order given. Within a queue the wait set is ordered by
-- priority, then FIFO. A paused queue hands out nothing; a rate-limited queue hands out
-- nothing until its window resets. Due delayed jobs are promoted first, so no separate
-- timer process is needed; the cost is one ZRANGEBYSCORE, O(log n).
--
-- Returns {wake_in_ms, job, job, ...}, one flat list: each job is JOB_FIELDS items and
-- then its results (see put_claimed); wake_in_ms, when none was found, says how long the
-- worker may block before a delayed job or a rate-limit window falls due (-1: nothing
-- scheduled). Flat, because Redis turns each table of a script's reply into a reply of
-- its own (six field probes and a deferred length each): a nested job cost a no-op job
-- ~5 % of its server instructions.

local CLAIM_FIELDS = {'stage', 'params', 'attempts', 'max_attempts', 'timeout_ms', 'cost',
  'backoff', 'has_deps', 'quiet'}

-- One claimed job as the worker reads it (pipeline/jobs.py ClaimedJob.from_flat),
-- appended to `out`: id, queue, token, stage, params, attempt, max_attempts, timeout_ms,
-- cost, backoff, n, then n items of its results hash (field, value, ...). `f` holds
-- CLAIM_FIELDS from index `at`.
local JOB_FIELDS = 11
local function put_claimed(out, id, q, token, f, at, attempt)
  local k = #out
  out[k + 1], out[k + 2], out[k + 3], out[k + 4] = id, q, token, f[at]
  out[k + 5] = get_long(k_job(id), 'params', f[at + 1])
  -- numbers, not the hash's text: parsing them here costs the server less than the
  -- worker's int() of bytes did (~2,000 instructions each)
  out[k + 6], out[k + 7], out[k + 8] = attempt, tonumber(f[at + 3]), tonumber(f[at + 4])
  out[k + 9], out[k + 10] = tonumber(f[at + 5]) or 1, f[at + 6] or ''
  if f[at + 7] == '1' then
    local results = redis.call('HGETALL', k_results(id))
    out[k + 11] = #results
    for i = 1, #results do out[k + 11 + i] = results[i] end
  else
    out[k + 11] = 0
  end
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

local function activate(out, id, q, worker, token, lease_ms, now, stamp)
  local job = k_job(id)
  local f = redis.call('HMGET', job, unpack(CLAIM_FIELDS))
  local attempt = (tonumber(f[3]) or 0) + 1
  redis.call('HSET', job, 'state', 'active', 'owner', token, 'worker', worker,
    'started', stamp, 'attempts', f[3] and int(attempt) or '1')
  redis.call('ZADD', k_active(q), int(now + lease_ms), id)
  -- a quiet DAG's `active` is read from the fields just written (common.lua)
  if not f[9] then emit_loud(dag_of(id), 'active', id, 'worker', worker, 'attempt', attempt) end
  put_claimed(out, id, q, token, f, 1, attempt)
end

-- What a resent claim returns (see request.lua): the jobs its token still holds, read
-- back from their hashes. The request record keeps only {wake, id, queue, token, id, ...},
-- not the claimed jobs' params, which made recording a 32-job claim cost 18 % more
-- server time per job. A job reclaimed since (its lease lapsed) is not handed out again.
-- Both take the claim's part of a reply or record from index `at`, appended to `out`.
local function compact_claim(reply, at, out)
  at, out = at or 1, out or {}
  out[#out + 1] = reply[at]
  local i = at + 1
  while i <= #reply do
    local k = #out
    out[k + 1], out[k + 2], out[k + 3] = reply[i], reply[i + 1], reply[i + 2]
    i = i + JOB_FIELDS + reply[i + JOB_FIELDS - 1]
  end
  return out
end

local function expand_claim(rec, at, out)
  at, out = at or 1, out or {}
  out[#out + 1] = rec[at]
  for i = at + 1, #rec, 3 do
    local id, q, token = rec[i], rec[i + 1], rec[i + 2]
    local f = redis.call('HMGET', k_job(id), 'owner', 'state', unpack(CLAIM_FIELDS))
    if f[1] == token and f[2] == 'active' then
      put_claimed(out, id, q, token, f, 3, tonumber(f[5]))
    end
  end
  return out
end

-- complete's reply and record: {n, n statuses, then the claim's part when it claimed},
-- which `claim_part` (compact_claim or expand_claim) turns into the other.
local function statuses_then(r, claim_part)
  local n = r[1]
  local out = {n, nil, nil, nil, nil, nil, nil, nil}  -- sized at once: see complete.lua
  for i = 2, n + 1 do out[i] = r[i] end
  if #r > n + 1 then claim_part(r, n + 2, out) end
  return out
end

local function compact_complete(reply) return statuses_then(reply, compact_claim) end
local function expand_complete(rec) return statuses_then(rec, expand_claim) end

-- Claims up to `count` jobs; tokens are `token .. '/' .. i`, unique per claim. The reply
-- is appended to `out` when given (complete's), from index `at`. `stamp`: `now` as text,
-- when the caller has it.
--
-- Only a claim made on its own re-arms the queue's marker for the next idle worker
-- (chain-wake). A claim riding on a completion comes from a busy worker: every arrival of
-- work (a submit, a promoted or released job, a parent made ready) already woke an idle
-- one, which re-arms the marker with its own claim. Skipping it there saves an LLEN per
-- job; were a woken worker to die before claiming, the others still look within their
-- idle wait.
local function claim_next(queues, worker, token, lease_ms, now, count, out, stamp)
  local busy = out ~= nil
  out, stamp = out or {}, stamp or int(now)
  local at = #out + 1
  out[at] = -1
  local got_all = 0
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
      local room = count - got_all
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
          if got == room and not busy then wake(q) end
          for i = 1, #popped, 2 do
            got_all = got_all + 1
            local tag = got_all == 1 and '/1' or '/' .. int(got_all)
            activate(out, popped[i], q, worker, token .. tag, lease_ms, now, stamp)
          end
        end
      end
      if got_all >= count then return out end
      if next_due >= 0 then
        local d = next_due - now
        if d < 1 then d = 1 end
        if wake_in < 0 or d < wake_in then wake_in = d end
      end
    end
  end
  out[at] = wake_in
  return out
end
