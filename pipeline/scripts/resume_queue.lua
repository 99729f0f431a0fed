-- resume_queue: hand out jobs again and wake an idle worker.
-- KEYS[1] namespace prefix
-- ARGV[1] queue
--@include common.lua
redis.call('HDEL', k_meta(ARGV[1]), 'paused')
emit_global('', 'resumed', '', 'queue', ARGV[1])
if redis.call('ZCARD', k_wait(ARGV[1])) > 0 then wake(ARGV[1]) end
return 1
