-- staged_hold: a submit about to stage an object (upload it, or find it there already)
-- holds it first, so that no sweeper deletes it between that look and the DAGs that use
-- it being written (staged_use then turns the hold into those DAGs).
-- KEYS[1] namespace prefix
-- ARGV[1] object id, ARGV[2] where it is (JSON: uri, endpoint), ARGV[3] hold token,
-- ARGV[4] how long the hold lasts (ms) if the submit never comes back
-- Returns 0: held; > 0: a sweeper is deleting the object: ask again in that many ms.
--@include common.lua
local id = ARGV[1]
local wait = redis.call('PTTL', k_staged_deleting(id))
if wait > 0 then return wait end
redis.call('HSET', k_staged(), id, ARGV[2])
redis.call('HSET', k_staged_users(id), 'hold:' .. ARGV[3], now_ms() + tonumber(ARGV[4]))
return 0
