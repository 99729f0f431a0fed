-- add_children: a running job fans out at run time (e.g. one job per video segment).
-- The new jobs join the DAG; the roots of the new batch become children of the running
-- job's parents (with the same edge policies), so those parents wait for them too.
-- KEYS[1] namespace prefix
-- ARGV[1] running job id, ARGV[2] its lease token, ARGV[3] jobs (JSON, see create_jobs.lua)
-- Returns the number of jobs added, or an error when the token does not own the job or
-- its DAG was cancelled (nothing is created: a cancelled DAG gets no new work).
--@include common.lua
--@include create_jobs.lua
local id, token = ARGV[1], ARGV[2]
local f = redis.call('HMGET', k_job(id), 'owner', 'dag', 'state', 'cancel')
if f[1] ~= token or f[3] ~= 'active' then
  return redis.error_reply('job ' .. id .. ' is not running under this lease')
end
local dag = f[2]
if f[4] == '1' or redis.call('HGET', k_dag(dag), 'state') == 'cancelled' then
  return redis.error_reply('DAG ' .. dag .. ' was cancelled: no jobs added')
end
local now = now_ms()
local jobs = cjson.decode(ARGV[3])
for _, j in ipairs(jobs) do
  if redis.call('EXISTS', k_job(j.id)) == 1 then
    return redis.error_reply('job ' .. j.id .. ' already exists')
  end
end
local edges = redis.call('HGETALL', k_parents(id))
local roots = create_jobs(dag, jobs, now)
for _, r in ipairs(roots) do
  for i = 1, #edges, 2 do
    local p, policy = edges[i], edges[i + 1]
    redis.call('HSET', k_parents(r), p, policy)
    redis.call('HSET', k_deps(p), r, 'pending')
    redis.call('HINCRBY', k_job(p), 'pending', 1)
    redis.call('HSET', k_job(p), 'has_deps', '1')
  end
end
redis.call('HINCRBY', k_dag(dag), 'total', #jobs)
redis.call('HINCRBY', k_dag(dag), 'open', #jobs)
if #edges == 0 then
  -- The running job is a root, so the new roots are roots of the DAG as well.
  redis.call('HINCRBY', k_dag(dag), 'roots', #roots)
else
  for _, r in ipairs(roots) do redis.call('HSET', k_job(r), 'root', '0') end
end
emit(dag, 'submitted', id, 'jobs', #jobs)
return #jobs
