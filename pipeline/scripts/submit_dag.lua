-- submit_dag: write a DAG and enqueue its leaves; a large DAG in several bounded steps;
-- or many small DAGs at once.
-- KEYS[1] namespace prefix
-- ARGV[1] dag id, ARGV[2] idempotency key ('' for none), ARGV[3] dag meta (JSON),
-- ARGV[4] jobs (JSON list, children before parents; see create_jobs.lua),
-- ARGV[5] request id (kept with the DAG: a resent submit finds its own DAG),
-- ARGV[6] step: '' the whole DAG at once; 'begin' its first jobs, 'part' more jobs,
-- 'seal' enqueue up to ARGV[7] of its leaves (repeated until none is left);
-- 'many': ARGV[7] is a JSON list of [dag id, idempotency key, meta (JSON text), jobs]
-- (ARGV[1..4] unused), each DAG whole and checked on its own; an entry's fifth item,
-- when present, is its webhook. For '' and 'begin', ARGV[7] is the DAG's webhook (JSON
-- from pipeline/webhooks.py: where its end is announced; absent or '' for none).
-- Returns {dag_id, created (1) | existing (0), leaves still to enqueue}; for 'many' one
-- {dag_id, 1 | 0} per DAG, or {dag_id, -1, why} for a DAG refused (nothing of it written).
-- A whole DAG written (or found written by this very request) under the id it was sent
-- with is answered 1, in both forms, and not with a table: Redis converts each table of a
-- reply with eight probes of its fields, 3.5 % of a one-job submit's instructions.
--
-- A DAG written in steps is in state `building` until its first seal step: none of its
-- jobs is queued, so nothing runs on half a DAG, and a cancel stops the building (the
-- next step gets an error). Each step holds Redis for a few ms, not seconds.
--@include common.lua
--@include create_jobs.lua
local dag, idem, meta, req = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local step = ARGV[6] or ''
local now, at = clock()

if step == 'part' or step == 'seal' then
  local state = redis.call('HGET', k_dag(dag), 'state')
  if step == 'part' and state ~= 'building' then
    return redis.error_reply('DAG ' .. dag .. ' is ' .. (state or 'gone') .. ', not building')
  end
  if step == 'seal' then
    if state == 'building' then
      redis.call('HSET', k_dag(dag), 'state', 'running')
      redis.call('ZREM', k_dags_building(), dag)
      -- Its own stream gets no `submitted` event: a watcher reads that from the hash
      -- (pipeline/events.py), so a waiting DAG has no stream yet.
      emit_global(dag, 'submitted', '', 'jobs', redis.call('HGET', k_dag(dag), 'total'))
    elseif state ~= 'running' then
      return redis.error_reply('DAG ' .. dag .. ' is ' .. (state or 'gone') .. ', not building')
    end
    local ids = redis.call('LPOP', k_dag_leaves(dag), tonumber(ARGV[7]) or 1000)
    for _, id in ipairs(ids or {}) do enqueue(id, now) end
    return {dag, 1, redis.call('LLEN', k_dag_leaves(dag))}
  end
  local jobs = cjson.decode(ARGV[4])
  local bad = check_jobs(dag, jobs, true)
  if bad then return redis.error_reply('DAG ' .. dag .. ' refused: ' .. bad) end
  local roots = create_jobs(dag, jobs, now, true)
  redis.call('HINCRBY', k_dag(dag), 'total', int(#jobs))
  redis.call('HINCRBY', k_dag(dag), 'open', int(#jobs))
  redis.call('HINCRBY', k_dag(dag), 'roots', int(#roots))
  return {dag, 1, 0}
end

-- A whole DAG: CREATED, {existing dag, 0, 0} (its idempotency key named that DAG), or nil
-- and why it was refused (nothing written then). A resend of this very submit (its reply
-- was lost; no request record is kept for a submit, see request.lua) finds the DAG that
-- carries its request id: answered as the first send was, before the idempotency key,
-- which names that same DAG by now.
local CREATED = {}  -- written, or found written by this request, under the id it was sent with
local function submit_whole(dag, idem, meta, jobs, building, webhook, call)
  local seen = redis.call('HMGET', k_dag(dag), 'req', 'state')
  if req and req ~= '' and seen[1] == req then return CREATED end
  if idem ~= '' then
    local existing = redis.call('GET', k_idem(idem))
    if existing and redis.call('EXISTS', k_dag(existing)) == 1 then return {existing, 0, 0} end
  end
  if seen[2] then return nil, 'DAG ' .. dag .. ' already exists' end
  -- Everything checked before the first write (a refused payload leaves no key).
  local bad = check_jobs(dag, jobs, false, nil, true)
  if bad then return nil, 'DAG ' .. tostring(dag) .. ' refused: ' .. bad end
  -- Counters at 0 are not stored (HINCRBY starts from nothing; readers default them).
  local njobs = int(#jobs)
  local args = {'v', SCHEMA, 'state', building and 'building' or 'running', 'total', njobs,
    'open', njobs, 'created', at, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
  put_long(args, 'meta', meta)
  if idem ~= '' then
    args[#args + 1] = 'idem'; args[#args + 1] = idem
    redis.call('SET', k_idem(idem), dag)
  end
  if req and req ~= '' then args[#args + 1] = 'req'; args[#args + 1] = req end
  if webhook and webhook ~= '' then put_long(args, 'webhook', webhook) end
  if building then redis.call('ZADD', k_dags_building(), at, dag) end
  local quiet = #jobs == 1 and not building
  if quiet then
    args[#args + 1] = 'quiet'; args[#args + 1] = jobs[1].name
    -- nothing but its job to close it: see settle_plain (common.lua)
    quiet = (idem == '' and not (webhook and webhook ~= '')) and 'p' or '1'
  end
  local roots = create_jobs(dag, jobs, now, building, quiet, call, at)
  args[#args + 1] = 'roots'; args[#args + 1] = int(#roots)
  redis.call('HSET', k_dag(dag), unpack(args))
  if not building then emit_global(dag, 'submitted', '', 'jobs', njobs) end
  return CREATED
end

if step == 'many' then
  local out = {}
  local ok, dags = pcall(cjson.decode, ARGV[7])
  if not ok or type(dags) ~= 'table' then return redis.error_reply('submit: not a JSON list') end
  local njobs = 0  -- at least as many as will be written (see submit_call)
  for _, d in ipairs(dags) do
    if type(d) == 'table' and type(d[4]) == 'table' then njobs = njobs + #d[4] end
  end
  local call = submit_call(njobs)
  for i, d in ipairs(dags) do
    local id = type(d) == 'table' and d[1]
    if type(id) ~= 'string' or type(d[2]) ~= 'string' or type(d[3]) ~= 'string' then
      out[i] = {tostring(id), -1, 'DAG entry ' .. i .. ' is malformed'}
    elseif not valid_id(id, DAG_ID_MAX) then
      out[i] = {id, -1, 'DAG ' .. id .. ' refused: invalid DAG id ' .. id}
    elseif d[5] ~= nil and type(d[5]) ~= 'string' then
      out[i] = {id, -1, 'DAG ' .. id .. ' refused: its webhook is not a string'}
    else
      local reply, why = submit_whole(id, d[2], d[3], d[4], false, d[5], call)
      if reply == CREATED then
        out[i] = 1
      else
        out[i] = reply and {reply[1], reply[2]} or {id, -1, why}
      end
    end
  end
  finish_call(call)
  return out
end
local ok, jobs = pcall(cjson.decode, ARGV[4])
if not ok then return redis.error_reply('DAG ' .. tostring(dag) .. ' refused: jobs are not JSON') end
local reply, why = submit_whole(dag, idem, meta, jobs, step == 'begin', ARGV[7])
if not reply then return redis.error_reply(why) end
if reply == CREATED then return 1 end
return reply
