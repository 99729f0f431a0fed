-- worker_heartbeat: a worker node says it is alive and what it is doing. Nodes silent for
-- longer than the TTL drop out of the registry (their hash expires on its own).
-- KEYS[1] namespace prefix
-- ARGV[1] worker id, ARGV[2] ttl ms (0 = the worker is leaving), then field/value pairs
-- Returns the number of live workers.
--@include common.lua
local id, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local key = k_worker(id)
if ttl == 0 then
  redis.call('DEL', key)
  redis.call('ZREM', k_workers(), id)
else
  local fields = {'last_seen', now}
  for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', key, unpack(fields))
  redis.call('PEXPIRE', key, ttl)
  redis.call('ZADD', k_workers(), now + ttl, id)
end
redis.call('ZREMRANGEBYSCORE', k_workers(), '-inf', now)
return redis.call('ZCARD', k_workers())
