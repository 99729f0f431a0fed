-- add_children: a running job fans out at run time (e.g. one job per video segment).
-- The new jobs join the DAG; the roots of the new batch become children of the running
-- job's parents (with the same edge policies), so those parents wait for them too.
-- KEYS[1] namespace prefix
-- ARGV[1] running job id, ARGV[2] its lease token, ARGV[3] jobs (JSON, see create_jobs.lua)
-- Returns the number of jobs in the fan-out (those an earlier attempt of the job added
-- included), or an error when the token does not own the job, its DAG was cancelled, a
-- job is malformed or clashes with an existing one, or a retried attempt fans out
-- otherwise than the earlier one did: then nothing is created.
--@include common.lua
--@include create_jobs.lua
local id, token = ARGV[1], ARGV[2]
local f = redis.call('HMGET', k_job(id), 'owner', 'state', 'cancel', 'attempts', 'fan_token',
  'fan_call')
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
-- name clash. An earlier attempt is an earlier claim (another lease token): attempts
-- start again from 0 when a job comes back from the dead-letter queue.
local function earlier_attempts(j)
  local by = redis.call('HMGET', k_job(j.id), 'spawned_by', 'spawned_token', 'spawned_attempt')
  if by[1] ~= id then return false end
  if by[2] then return by[2] ~= token end
  return (tonumber(by[3]) or attempt) < attempt  -- added before tokens were kept
end
local bad = check_jobs(dag, jobs, false, earlier_attempts)
if bad then return redis.error_reply('no jobs added: ' .. bad) end
-- The earlier attempt's jobs are kept, results and all, only if this attempt asks for
-- the same ones: else the parents would silently get children of another plan. So the
-- jobs it re-adds must match (stage, params) and each fan-out call (a run may make
-- several, numbered in order) must re-add all that the same call of the earlier run did.
local call = (f[5] == token) and (tonumber(f[6]) or 0) + 1 or 1
local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= 'table' then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
local matched = 0
for _, j in ipairs(jobs) do
  local had = redis.call('HMGET', k_job(j.id), 'stage', 'params')
  if had[1] then
    matched = matched + 1
    local params = get_long(k_job(j.id), 'params', had[2]) or 'null'
    local what = had[1] ~= j.stage and 'stage'
      or (not same(cjson.decode(params), cjson.decode(j.params)) and 'params')
    if what then
      return redis.error_reply('no jobs added: the fan-out changed on retry: ' .. j.id ..
        ' was added by an earlier attempt with other ' .. what ..
        ' (a stage must fan out the same way on every attempt)')
    end
  end
end
local before = tonumber(redis.call('HGET', k_job(id), 'fan_n:' .. call))
if before and matched < before then
  return redis.error_reply('no jobs added: the fan-out changed on retry: fan-out ' .. call ..
    ' of an earlier attempt added ' .. before .. ' jobs, this one has ' .. matched ..
    ' of them (a stage must fan out the same way on every attempt)')
end
local new, old = {}, {}
for _, j in ipairs(jobs) do
  if redis.call('EXISTS', k_job(j.id)) == 1 then old[j.id] = true else new[#new + 1] = j end
end
-- The jobs already there were wired when they were added; an edge between one of them
-- and a new job would change a finished part of the DAG, so that fan-out is refused.
for _, j in ipairs(jobs) do
  for _, edge in ipairs(j.children or NONE) do
    if (old[j.id] or false) ~= (old[edge[1]] or false) then
      return redis.error_reply('no jobs added: ' .. j.id .. ' -> ' .. edge[1] ..
        ' joins jobs an earlier attempt added to new ones')
    end
  end
end
unquiet(dag)  -- no longer a one-job DAG (common.lua)
redis.call('HSET', k_job(id), 'fan_token', token, 'fan_call', call)
if not before or #jobs > before then redis.call('HSET', k_job(id), 'fan_n:' .. call, #jobs) end
if #new == 0 then return #jobs end
local edges = parents_of(id)
local roots = create_jobs(dag, new, now)
for _, j in ipairs(new) do
  redis.call('HSET', k_job(j.id), 'spawned_by', id, 'spawned_attempt', attempt,
    'spawned_token', token)
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
