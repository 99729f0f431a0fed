-- claim: hand the next job to a worker and start its lease.
-- KEYS[1] namespace prefix
-- ARGV[1] worker id, ARGV[2] lease token, ARGV[3] lease ms, ARGV[4..] queues in order
-- Returns the job (see claim_next.lua) or {false, wake_in_ms}.
--@include common.lua
--@include claim_next.lua
local queues = {}
for i = 4, #ARGV do queues[#queues + 1] = ARGV[i] end
return claim_next(queues, ARGV[1], ARGV[2], tonumber(ARGV[3]), now_ms())
