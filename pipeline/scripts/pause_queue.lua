-- pause_queue: a paused queue hands out no job; running jobs finish.
-- KEYS[1] namespace prefix
-- ARGV[1] queue
--@include common.lua
redis.call('HSET', k_meta(ARGV[1]), 'paused', '1')
redis.call('SADD', k_queues(), ARGV[1])
emit_global('', 'paused', '', 'queue', ARGV[1])
return 1
