-- reclaim_stalled: jobs whose lease expired (their worker died or hung) go back to the
-- queue, or to the dead-letter queue after max_stalls stalls. Clearing the owner makes a
-- late completion from the old worker a no-op.
-- KEYS[1] namespace prefix
-- ARGV[1] max jobs per queue, ARGV[2..] queues
-- Returns the ids reclaimed.
--@include common.lua
--@include settle.lua
local now = now_ms()
local out = {}
for i = 2, #ARGV do
  local q = ARGV[i]
  local expired = redis.call('ZRANGEBYSCORE', k_active(q), '-inf', now, 'LIMIT', 0,
    tonumber(ARGV[1]))
  for _, id in ipairs(expired) do
    redis.call('ZREM', k_active(q), id)
    local f = redis.call('HMGET', k_job(id), 'dag', 'worker', 'max_stalls', 'state', 'cancel')
    local dag = f[1]
    if f[4] == 'active' then
      local stalls = redis.call('HINCRBY', k_job(id), 'stalls', 1)
      redis.call('HSET', k_job(id), 'owner', '')
      reset_pct(id, dag)
      emit(dag, 'stalled', id, 'worker', f[2] or '', 'stalls', stalls)
      emit_global(dag, 'stalled', id)
      out[#out + 1] = id
      if f[5] == '1' then
        redis.call('HSET', k_job(id), 'state', 'cancelled', 'finished', now)
        job_ended(dag, id, 'cancelled', now)
      elseif stalls > tonumber(f[3] or '1') then
        kill_job(id, dag, cjson.encode({type = 'StalledError',
          message = 'lease expired ' .. stalls .. ' times (worker ' .. (f[2] or '?') .. ')'}), now)
      else
        enqueue(id, now)
      end
    end
  end
end
return out
