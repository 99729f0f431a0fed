-- throttle_queue: an external service told us to back off (HTTP 429 with a wait): no
-- worker takes jobs from the queue until then. Jobs already running finish.
-- KEYS[1] namespace prefix
-- ARGV[1] queue, ARGV[2] ms to hold the queue
-- Returns the time (ms) until which the queue is held.
--@include common.lua
local q = ARGV[1]
local now = now_ms()
local until_ms = now + tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', k_meta(q), 'hold_until') or '0') or 0
if current > until_ms then until_ms = current end
redis.call('HSET', k_meta(q), 'hold_until', until_ms)
emit_global('', 'throttled', '', 'queue', q, 'until', until_ms)
return until_ms
