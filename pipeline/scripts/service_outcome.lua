-- service_outcome: what a call to an external service taught us. Failures in a row open
-- the breaker (every node then defers work for that service); a success closes it.
-- KEYS[1] namespace prefix
-- ARGV[1] service name, ARGV[2] 'ok' | 'fail', ARGV[3] failures in a row that open it
-- Returns the breaker's state after the outcome.
--@include common.lua
local name, outcome = ARGV[1], ARGV[2]
local key = k_breaker(name)
local now = now_ms()
local state = redis.call('HGET', key, 'state') or 'closed'
if outcome == 'ok' then
  if state ~= 'closed' then
    redis.call('HSET', key, 'state', 'closed', 'failures', 0, 'closed_at', now)
    emit_global('', 'breaker_closed', '', 'service', name)
  else
    redis.call('HSET', key, 'failures', 0)
  end
  return 'closed'
end
local failures = redis.call('HINCRBY', key, 'failures', 1)
if state == 'half_open' or (state == 'closed' and failures >= tonumber(ARGV[3])) then
  redis.call('HSET', key, 'state', 'open', 'opened_at', now)
  redis.call('HINCRBY', key, 'opened_count', 1)
  emit_global('', 'breaker_opened', '', 'service', name, 'failures', failures)
  return 'open'
end
return state
