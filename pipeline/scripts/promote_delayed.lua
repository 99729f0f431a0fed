-- promote_delayed: move due delayed jobs (retries, run-at) into their wait sets.
-- claim does this on its own before each claim; this script serves tools that want the
-- queues' counts to be current without claiming.
-- KEYS[1] namespace prefix
-- ARGV[1] max jobs per queue, ARGV[2..] queues
-- Returns the number promoted.
--@include common.lua
--@include claim_next.lua
local now = now_ms()
local n = 0
for i = 2, #ARGV do n = n + promote_due(ARGV[i], now, tonumber(ARGV[1])) end
return n
