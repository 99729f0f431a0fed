-- add_children: a running job fans out at run time (e.g. one job per video segment).
-- The new jobs join the DAG; the roots of the new batch become children of the running
-- job's parents (with the same edge policies), so those parents wait for them too.
-- KEYS[1] namespace prefix
-- ARGV[1] running job id, ARGV[2] its lease token, ARGV[3] jobs (JSON, see create_jobs.lua)
-- Returns the number of jobs in the fan-out (those an earlier attempt of the job added
-- included), or an error when the token does not own the job, its DAG was cancelled or
-- a job is malformed or clashes with an existing one: then nothing is created.
--@include common.lua
--@include create_jobs.lua
local id, token = ARGV[1], ARGV[2]
local f = redis.call('HMGET', k_job(id), 'owner', 'state', 'cancel', 'attempts')
if f[1] ~= token or f[2] ~= 'active' then
  return redis.error_reply('job ' .. id .. ' is not running under this lease')
end
local dag, attempt = dag_of(id), tonumber(f[4]) or 0
if f[3] == '1' or redis.call('HGET', k_dag(dag), 'state') == 'cancelled' then
  return redis.error_reply('DAG ' .. dag .. ' was cancelled: no jobs added')
end
local now = now_ms()
local jobs = cjson.decode(ARGV[3])
-- A retried attempt fans out again: the jobs an earlier attempt of this job added are
-- already there (they may have run, and their parents hold their results), so they
-- count as added and only the missing ones are created. Any other existing job is a
-- name clash.
local function earlier_attempts(j)
  local by = redis.call('HMGET', k_job(j.id), 'spawned_by', 'spawned_attempt')
  return by[1] == id and (tonumber(by[2]) or attempt) < attempt
end
local bad = check_jobs(dag, jobs, false, earlier_attempts)
if bad then return redis.error_reply('no jobs added: ' .. bad) end
unquiet(dag)  -- no longer a one-job DAG (common.lua)
local new, old = {}, {}
for _, j in ipairs(jobs) do
  if redis.call('EXISTS', k_job(j.id)) == 1 then old[j.id] = true else new[#new + 1] = j end
end
-- The jobs already there were wired when they were added; an edge between one of them
-- and a new job would change a finished part of the DAG, so that fan-out is refused.
for _, j in ipairs(jobs) do
  for _, edge in ipairs(j.children) do
    if (old[j.id] or false) ~= (old[edge[1]] or false) then
      return redis.error_reply('no jobs added: ' .. j.id .. ' -> ' .. edge[1] ..
        ' joins jobs an earlier attempt added to new ones')
    end
  end
end
if #new == 0 then return #jobs end
local edges = parents_of(id)
local roots = create_jobs(dag, new, now)
for _, j in ipairs(new) do
  redis.call('HSET', k_job(j.id), 'spawned_by', id, 'spawned_attempt', attempt)
end
local entries = {}
for i = 1, #edges, 2 do entries[#entries + 1] = name_of(edges[i]) .. '=' .. edges[i + 1] end
for _, r in ipairs(roots) do
  if #entries > 0 then add_parents(r, entries) end
  for i = 1, #edges, 2 do
    local p = edges[i]
    redis.call('HSET', k_job(p), 'd:' .. name_of(r), 'pending', 'has_deps', '1')
    redis.call('HINCRBY', k_job(p), 'pending', 1)
  end
end
redis.call('HINCRBY', k_dag(dag), 'total', #new)
redis.call('HINCRBY', k_dag(dag), 'open', #new)
if #edges == 0 then
  -- The running job is a root, so the new roots are roots of the DAG as well.
  redis.call('HINCRBY', k_dag(dag), 'roots', #roots)
else
  for _, r in ipairs(roots) do redis.call('HDEL', k_job(r), 'root') end
end
emit(dag, 'submitted', id, 'jobs', #new)
return #jobs
