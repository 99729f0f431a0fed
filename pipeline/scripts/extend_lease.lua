-- extend_lease: a worker still runs these jobs; push their lease deadlines forward.
-- KEYS[1] namespace prefix
-- ARGV[1] lease ms, then pairs: job id, token
-- Returns one code per job: 1 extended, 2 extended but its DAG was cancelled (stop it),
-- 0 lost (reclaimed or finished elsewhere: stop it and discard its result).
--@include common.lua
local now = now_ms()
local lease = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', k_job(id), 'owner', 'queue', 'cancel', 'state')
  if f[1] == token and f[4] == 'active' then
    redis.call('ZADD', k_active(f[2]), 'XX', int(now + lease), id)
    if f[3] == '1' then out[#out + 1] = 2 else out[#out + 1] = 1 end
  else
    out[#out + 1] = 0
  end
end
return out
