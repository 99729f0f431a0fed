-- claim: hand up to `count` jobs to a worker and start their leases.
-- KEYS[1] namespace prefix
-- ARGV[1] worker id, ARGV[2] lease token base, ARGV[3] lease ms, ARGV[4] count,
-- ARGV[5..] queues in order
-- Returns {wake_in_ms, job, ...} (see claim_next.lua).
--@include common.lua
--@include claim_next.lua
return claim_next({unpack(ARGV, 5)}, ARGV[1], ARGV[2], tonumber(ARGV[3]), now_ms(),
  tonumber(ARGV[4]))
