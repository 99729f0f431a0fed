-- staged_release: may a staged object be deleted now? Only once nothing keeps it: no
-- submit holds it, and every DAG that uses it has ended more than its grace ago. A
-- completed or cancelled DAG ended when it finished; a failed one may still be retried
-- from the dead-letter queue, so it keeps the object until retention deletes it; a DAG
-- that is gone (pruned) ended when a sweeper first found it gone. When nothing keeps it,
-- the object is marked as being deleted (holds wait on that mark) for the caller, who
-- deletes it from the store and reports with staged_deleted.
-- KEYS[1] namespace prefix
-- ARGV[1] object id, ARGV[2] the caller's token, ARGV[3] how long the mark lasts (ms)
-- Returns {1, where (JSON)}: delete it; {0, ms}: kept (ms: when its grace ends, 0: a DAG
-- has not ended or a hold lasts); {-1}: not tracked any more (kept for good, or gone).
--@include common.lua
local id, now = ARGV[1], now_ms()
local users = k_staged_users(id)
if redis.call('EXISTS', k_staged_deleting(id)) == 1 then return {0, 0} end
local where = redis.call('HGET', k_staged(), id)
if not where then return {-1} end
local entries = redis.call('HGETALL', users)
local kept, until_ms = false, 0
for i = 1, #entries, 2 do
  local who, v = entries[i], entries[i + 1]
  if who == 'keep' then
    -- Kept for good: no sweeper looks at it again (the mark stays, for later submits).
    redis.call('HDEL', k_staged(), id)
    return {-1}
  elseif string.sub(who, 1, 5) == 'hold:' then
    if tonumber(v) > now then kept = true else redis.call('HDEL', users, who) end
  else
    local grace, seen_gone = string.match(v, '^(-?%d+):?(%d*)$')
    grace = tonumber(grace) or 0
    local ended
    if redis.call('EXISTS', k_dag(who)) == 0 then
      ended = tonumber(seen_gone)
      if not ended then
        ended = now
        redis.call('HSET', users, who, grace .. ':' .. now)
      end
    else
      local d = redis.call('HMGET', k_dag(who), 'state', 'finished')
      if d[1] == 'completed' or d[1] == 'cancelled' then
        ended = tonumber(d[2]) or now
      end
    end
    if not ended then
      kept = true
    elseif ended + grace > now then
      kept = true
      until_ms = math.max(until_ms, ended + grace)
    end
  end
end
if kept then return {0, until_ms} end
redis.call('SET', k_staged_deleting(id), ARGV[2], 'PX', ARGV[3])
return {1, where}
