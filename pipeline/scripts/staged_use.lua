-- staged_use: the DAGs a submit wrote use the objects it held; the hold ends.
-- KEYS[1] namespace prefix
-- ARGV[1] object id, ARGV[2] hold token, ARGV[3] grace after a DAG's end (ms; '-1': the
-- object is kept for good), ARGV[4..] the DAG ids (none: the submit wrote no DAG)
-- Returns the number of DAGs recorded.
--@include common.lua
local id = ARGV[1]
local users = k_staged_users(id)
redis.call('HDEL', users, 'hold:' .. ARGV[2])
for i = 4, #ARGV do
  if ARGV[3] == '-1' then
    redis.call('HSET', users, 'keep', '1')
  else
    redis.call('HSET', users, ARGV[i], ARGV[3])
  end
end
return #ARGV - 3
