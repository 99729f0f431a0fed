-- service_gate: may a job that needs an external service (object storage) start now?
-- One atomic decision for the whole fleet, so one node's discovery protects every node:
--   closed    -> yes, unless the service's rate limit (jobs per window) is used up;
--   open      -> no, until the cool-down has passed; then the caller becomes the single
--                half-open probe (others keep waiting while the probe's lease lasts);
--   half_open -> no while the probe runs.
-- KEYS[1] namespace prefix
-- ARGV[1] service name, ARGV[2] cool-down ms, ARGV[3] probe lease ms,
-- ARGV[4] rate max (0 = none), ARGV[5] rate window ms
-- Returns {1 | 0, retry_in_ms, state}.
--@include common.lua
local name = ARGV[1]
local key = k_breaker(name)
local now = now_ms()
local b = redis.call('HMGET', key, 'state', 'opened_at', 'probe_until')
local state = b[1] or 'closed'
if state == 'open' then
  local ready = tonumber(b[2]) + tonumber(ARGV[2])
  if now < ready then return {0, ready - now, state} end
  redis.call('HSET', key, 'state', 'half_open', 'probe_until', now + tonumber(ARGV[3]))
  emit_global('', 'breaker_half_open', '', 'service', name)
  return {1, 0, 'half_open'}
end
if state == 'half_open' then
  local until_ms = tonumber(b[3]) or 0
  if now < until_ms then return {0, until_ms - now, state} end
  -- the probe's lease lapsed without a verdict (its worker died): grant a new probe
  redis.call('HSET', key, 'probe_until', now + tonumber(ARGV[3]))
  return {1, 0, state}
end
local rate_max = tonumber(ARGV[4])
if rate_max > 0 then
  local rkey = k_service_rate(name)
  local used = redis.call('INCR', rkey)
  if used == 1 then redis.call('PEXPIRE', rkey, tonumber(ARGV[5])) end
  if used > rate_max then
    local ttl = redis.call('PTTL', rkey)
    return {0, ttl > 0 and ttl or 1, 'rate_limited'}
  end
end
return {1, 0, 'closed'}
