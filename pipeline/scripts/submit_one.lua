-- submit_one: a DAG of one job whose options are all at their usual values (no priority,
-- delay, run_at, backoff, cost, tags, stall limit, fallback or children): the API's
-- simplest case, and what a service that enqueues one upload at a time sends. It writes
-- what submit_dag writes for that DAG, field for field (tests/pipeline/test_submit_one.py
-- compares the two), from its arguments instead of a JSON list: the decode, the general
-- walk of create_jobs and its tables, and check_job's checks of fields such a job cannot
-- have, were a fifth of a one-job submit's server instructions on Redis 7.0 and Valkey
-- (benchmarks/server_instructions.py, docs/benchmarks.md). Any other DAG goes through
-- submit_dag.
-- KEYS[1] namespace prefix
-- ARGV[1] dag id, ARGV[2] idempotency key ('' for none), ARGV[3] dag meta (JSON),
-- ARGV[4] request id (kept with the DAG: a resent submit finds its own DAG),
-- ARGV[5] webhook (pipeline/webhooks.py; '' for none), ARGV[6] job name, ARGV[7] stage,
-- ARGV[8] queue, ARGV[9] params (JSON text), ARGV[10] max_attempts, ARGV[11] timeout_ms
-- (both decimal digits: the client sends whole numbers here, and tonumber alone would
-- also take "0x10" or " 3", which no JSON number is).
-- Returns 1 (written, or found written by this very request), {existing dag, 0, 0} (its
-- idempotency key named that DAG), or an error reply (nothing written).
--@include common.lua
--@include create_jobs.lua
local dag, idem, meta, req, webhook = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local name, queue = ARGV[6], ARGV[8]
local seen = redis.call('HMGET', k_dag(dag), 'req', 'state')
if req and req ~= '' and seen[1] == req then return 1 end  -- (a call cut short: refused below)
if idem ~= '' then
  local existing = redis.call('GET', k_idem(idem))
  if existing and redis.call('EXISTS', k_dag(existing)) == 1 then return {existing, 0, 0} end
end
if seen[2] then return redis.error_reply('DAG ' .. dag .. ' already exists') end
-- The same checks as submit_dag's, on the same fields, before the first write.
local id = dag .. '/' .. tostring(name)
local attempts, timeout = whole_number(ARGV[10]), whole_number(ARGV[11])
local bad
if not valid_id(dag, DAG_ID_MAX) then
  bad = 'invalid DAG id ' .. dag
elseif not valid_id(name, JOB_NAME_MAX) then
  bad = 'invalid job name ' .. tostring(name)
else
  bad = check_own(id, ARGV[7], queue, attempts, timeout)
end
if bad then return redis.error_reply('DAG ' .. dag .. ' refused: ' .. bad) end
local now, at = clock()
local quiet = (idem == '' and webhook == '') and 'p' or '1'
local seq = redis.call('INCRBY', k_seq(), '1') % PRIO_SPAN
local args = {'state', 'waiting', 'stage', ARGV[7], 'queue', queue,
  'max_attempts', num(attempts), 'timeout_ms', num(timeout), 'created', at,
  'seq', int(seq), nil, nil, nil, nil, nil, nil, nil, nil}
put_long(args, 'params', ARGV[9])
args[#args + 1] = 'root'; args[#args + 1] = '1'
args[#args + 1] = 'quiet'; args[#args + 1] = quiet
redis.call('HSET', k_job(id), unpack(args))
redis.call('SADD', k_dag_jobs(dag), id)
redis.call('ZADD', k_wait(queue), int(1000 * PRIO_SPAN + seq), id)
redis.call('SADD', k_queues(), queue)
wake(queue)
args = {'v', SCHEMA, 'state', 'running', 'total', '1', 'open', '1', 'created', at,
  nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
put_long(args, 'meta', meta)
if idem ~= '' then
  args[#args + 1] = 'idem'; args[#args + 1] = idem
  redis.call('SET', k_idem(idem), dag)
end
if req ~= '' then args[#args + 1] = 'req'; args[#args + 1] = req end
if webhook ~= '' then put_long(args, 'webhook', webhook) end
args[#args + 1] = 'quiet'; args[#args + 1] = name
args[#args + 1] = 'roots'; args[#args + 1] = '1'
redis.call('HSET', k_dag(dag), unpack(args))
emit_global(dag, 'submitted', '', 'jobs', '1')
return 1
