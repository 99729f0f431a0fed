-- reclaim_stalled: jobs whose lease expired (their worker died or hung) go back to the
-- queue. A stall spends the attempt it interrupted, as a failure does: the job goes to
-- the dead-letter queue when that was its last attempt (or, when the stage sets
-- max_stalls > 0, after more stalls than that). Clearing the owner makes a late
-- completion from the old worker a no-op.
-- KEYS[1] namespace prefix
-- ARGV[1] max jobs per queue, ARGV[2..] queues (none: every queue of the namespace, so
-- jobs claimed from a queue whose workers are all gone are reclaimed by any node)
-- Returns the ids reclaimed.
--@include common.lua
--@include settle.lua
local now = now_ms()
local out = {}
local queues = {}
for i = 2, #ARGV do queues[#queues + 1] = ARGV[i] end
if #queues == 0 then queues = redis.call('SMEMBERS', k_queues()) end
for _, q in ipairs(queues) do
  local expired = redis.call('ZRANGEBYSCORE', k_active(q), '-inf', now, 'LIMIT', 0,
    tonumber(ARGV[1]))
  for _, id in ipairs(expired) do
    redis.call('ZREM', k_active(q), id)
    local f = redis.call('HMGET', k_job(id), 'queue', 'worker', 'max_stalls', 'state', 'cancel',
      'attempts', 'max_attempts')
    local dag = dag_of(id)
    if f[4] == 'active' then
      unquiet(dag)  -- before the job or DAG changes (common.lua)
      local stalls = redis.call('HINCRBY', k_job(id), 'stalls', 1)
      redis.call('HSET', k_job(id), 'owner', '')
      reset_pct(id, dag)
      emit(dag, 'stalled', id, 'worker', f[2] or '', 'stalls', stalls)
      emit_global(dag, 'stalled', id)
      out[#out + 1] = id
      if f[5] == '1' then
        redis.call('HSET', k_job(id), 'state', 'cancelled', 'finished', now)
        job_ended(dag, id, 'cancelled', now)
      elseif tonumber(f[6] or '0') >= tonumber(f[7] or '1')
          or (tonumber(f[3] or '0') > 0 and stalls > tonumber(f[3])) then
        kill_job(id, dag, cjson.encode({type = 'StalledError',
          message = 'lease expired on attempt ' .. (f[6] or '?') .. ' of ' .. (f[7] or '?') ..
            ' (' .. stalls .. ' stalls, last worker ' .. (f[2] or '?') .. ')'}), now)
      else
        enqueue(id, now)
      end
    end
  end
end
return out
