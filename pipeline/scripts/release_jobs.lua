-- release_jobs: a worker hands back jobs it claimed but will not finish (graceful
-- shutdown, prefetched jobs never started). They return to their queue at once, without
-- waiting for the lease to expire and without spending an attempt.
-- KEYS[1] namespace prefix
-- ARGV: pairs of job id, lease token
-- Returns the number released.
--@include common.lua
local now = now_ms()
local n = 0
for i = 1, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', k_job(id), 'owner', 'state', 'queue', 'dag', 'attempts')
  if f[1] == token and f[2] == 'active' then
    redis.call('ZREM', k_active(f[3]), id)
    reset_pct(id, f[4])
    redis.call('HSET', k_job(id), 'owner', '', 'attempts', math.max(0, tonumber(f[5]) - 1))
    emit(f[4], 'released', id)
    enqueue(id, now)
    n = n + 1
  end
end
return n
