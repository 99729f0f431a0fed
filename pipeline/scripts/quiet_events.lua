-- quiet_events: the events a quiet one-job DAG's stream would hold (see unquiet in
-- common.lua), for a watcher; or, with ARGV[2] = 'stream', write them into the stream and
-- end the quiet, for a follower that blocks on the stream.
-- KEYS[1] namespace prefix
-- ARGV[1] dag id, ARGV[2] '' | 'stream'
-- Returns {1, {id, field, value, ...}, ...} while the DAG is quiet (nothing written), else
-- {0}: the stream holds every event.
--@include common.lua
local dag = ARGV[1]
local name = redis.call('HGET', k_dag(dag), 'quiet')
if not name then return {0} end
if ARGV[2] == 'stream' then
  unquiet(dag)
  return {0}
end
local out = {1}
for _, e in ipairs(quiet_events(dag, name)) do out[#out + 1] = e end
return out
