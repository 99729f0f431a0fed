-- reroute_orphans: no live worker serves this queue any more (its GPU boxes went away):
-- move its waiting jobs that have a fallback queue there. Jobs that strictly need the
-- capability stay, and show up as waiting for a capability.
-- KEYS[1] namespace prefix
-- ARGV[1] queue, ARGV[2] max jobs
-- Returns the number of jobs moved.
--@include common.lua
local q = ARGV[1]
local now = now_ms()
local moved = 0
local ids = redis.call('ZRANGE', k_wait(q), 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  local fallback = redis.call('HGET', k_job(id), 'fallback')
  if fallback and fallback ~= '' then
    redis.call('ZREM', k_wait(q), id)
    redis.call('HSET', k_job(id), 'queue', fallback, 'fallback', '')
    local dag = dag_of(id)
    emit(dag, 'rerouted', id, 'from', q, 'to', fallback)
    enqueue(id, now)
    moved = moved + 1
  end
end
return moved
