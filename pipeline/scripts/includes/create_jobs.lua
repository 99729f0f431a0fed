-- Write a batch of new jobs of one DAG (needs common.lua).
--
-- `jobs` is a decoded JSON list; each entry: id, name, stage, queue, params (a JSON
-- string), max_attempts, timeout_ms, and where not at their usual value (the client
-- leaves those out: a third of the JSON to decode) fallback (''), prio (0), backoff (JSON
-- string, ''), cost (1), tags (''), max_stalls (0), run_at (unix ms, 0 = none), delay_ms
-- (from now, 0), children: {{child_id, policy}, ...} (none). Children must come before
-- their parents in the list (the client sends them in topological order). Jobs with no
-- children are enqueued, or, with `defer`, listed in the DAG's leaves list for a later
-- step to enqueue (a large DAG is written in several steps and runs only once all of it
-- is there). `root` (1|0), when given, says whether no job of the whole DAG depends on
-- the job.
-- Returns the ids of the batch's roots.
--
-- Lua does not roll back: a script that stops with an error part-way leaves what it
-- wrote. So check_jobs runs first and looks at everything create_jobs will use; a
-- payload it refuses writes nothing.

-- Ids and names: the character set and lengths of pipeline/keys.py (no ':' or '/', so a
-- name cannot reach into another key's name).
local ID_PATTERN = '^[A-Za-z0-9._-]+$'
-- A queue: an identifier, then its capability tags (`default@nvdec+nvenc`, pipeline/routing.py).
-- No ':' or braces: a queue name is part of its keys' names, shown in logs and the dashboard.
local QUEUE_PATTERN = '^[A-Za-z0-9._-]+[A-Za-z0-9._@+-]*$'
local QUEUE_MAX = 200
local DAG_ID_MAX, JOB_NAME_MAX = 64, 128
local POLICIES = {fail = true, ignore = true, continue = true}
local NONE = {}  -- a job's children when it has none (never written to)

local function valid_id(s, max)
  return type(s) == 'string' and #s <= max and string.find(s, ID_PATTERN) ~= nil
end

local function is_num(v, min)
  return type(v) == 'number' and v == v and (min == nil or v >= min)
end

-- A whole number sent as text (submit_one's arguments): nil unless all decimal digits.
-- tonumber alone would also take "0x10", " 3" or "1e3", which no JSON number the client
-- sends is, and which Python's int() refuses where a reader parses the stored field.
local function whole_number(text)
  if type(text) == 'string' and string.find(text, '^%d+$') then return tonumber(text) end
end

-- The checks of a job's own fields, which submit_one's arguments get too (as strings
-- and numbers: the types are checked all the same, for check_job's JSON).
local function check_own(id, stage, queue, max_attempts, timeout_ms)
  if type(stage) ~= 'string' or stage == '' then return 'job ' .. id .. ': no stage' end
  if type(queue) ~= 'string' or queue == '' then return 'job ' .. id .. ': no queue' end
  if #queue > QUEUE_MAX or not string.find(queue, QUEUE_PATTERN) then
    local shown = string.gsub(string.sub(queue, 1, 80), '[%c"\\]', '?')  -- one line
    return 'job ' .. id .. ': invalid queue "' .. shown .. '"' ..
      ' (letters, digits, ".", "_", "-", then "@tag+tag")'
  end
  if not is_num(max_attempts, 1) then return 'job ' .. id .. ': bad max_attempts' end
  if not is_num(timeout_ms, 0) then return 'job ' .. id .. ': bad timeout_ms' end
end

-- Straight-line, each field read once: the same checks as loops over field lists took
-- twice as long a job (an iterator call and a table read per field).
-- `earlier`: children may also be jobs an earlier step of this DAG wrote.
local function check_job(dag, j, seen, earlier)
  if type(j) ~= 'table' then return 'a job entry is not an object' end
  local id, name, queue = j.id, j.name, j.queue
  if not valid_id(name, JOB_NAME_MAX) then return 'invalid job name ' .. tostring(name) end
  if id ~= dag .. '/' .. name then
    return 'job ' .. tostring(id) .. ' is not ' .. dag .. '/' .. name
  end
  if seen[id] then return 'job ' .. id .. ' is listed twice' end
  local bad = check_own(id, j.stage, queue, j.max_attempts, j.timeout_ms)
  if bad then return bad end
  if type(j.params) ~= 'string' then return 'job ' .. id .. ': params is not a string' end
  local v = j.backoff
  if v ~= nil and type(v) ~= 'string' then return 'job ' .. id .. ': backoff is not a string' end
  v = j.tags
  if v ~= nil and type(v) ~= 'string' then return 'job ' .. id .. ': tags is not a string' end
  v = j.fallback
  if v ~= nil and type(v) ~= 'string' then return 'job ' .. id .. ': fallback is not a string' end
  v = j.prio
  if v ~= nil and (not is_num(v, -1000) or v > 1000) then return 'job ' .. id .. ': bad prio' end
  v = j.cost
  if v ~= nil and not is_num(v, 1) then return 'job ' .. id .. ': bad cost' end
  v = j.max_stalls
  if v ~= nil and not is_num(v, 0) then return 'job ' .. id .. ': bad max_stalls' end
  v = j.run_at
  if v ~= nil and not is_num(v) then return 'job ' .. id .. ': bad run_at' end
  v = j.delay_ms
  if v ~= nil and not is_num(v) then return 'job ' .. id .. ': bad delay_ms' end
  v = j.root
  if v ~= nil and not is_num(v) then return 'job ' .. id .. ': bad root' end
  local children = j.children
  if children == nil then return end
  if type(children) ~= 'table' then return 'job ' .. id .. ': children is not a list' end
  for _, edge in ipairs(children) do
    -- Children come first: an edge to a job not listed before this one is a missing job
    -- or a cycle, and either would leave a parent waiting for ever.
    local child = type(edge) == 'table' and edge[1] or nil
    if not (child and (seen[child] or (earlier and type(child) == 'string'
        and redis.call('SISMEMBER', k_dag_jobs(dag), child) == 1))) then
      return 'job ' .. id .. ' depends on ' .. tostring(child) .. ', not listed before it'
    end
    if not POLICIES[edge[2]] then
      return 'job ' .. id .. ': unknown edge policy ' .. tostring(edge[2])
    end
  end
end

-- nil when the DAG id and every job are well formed and no job exists yet (unless
-- `exists_ok(job)` accepts it); else the first problem found. `fresh`: the DAG hash does
-- not exist, so none of its jobs can (prune removes a DAG's jobs before its hash, and
-- only a submit writes them together), and the read per job is skipped.
local function check_jobs(dag, jobs, earlier, exists_ok, fresh)
  if not valid_id(dag, DAG_ID_MAX) then return 'invalid DAG id ' .. tostring(dag) end
  if type(jobs) ~= 'table' or #jobs == 0 then return 'no jobs' end
  local seen = {}
  for _, j in ipairs(jobs) do
    local bad = check_job(dag, j, seen, earlier)
    if bad then return bad end
    seen[j.id] = true
    if not fresh and redis.call('EXISTS', k_job(j.id)) == 1
        and not (exists_ok and exists_ok(j)) then
      return 'job ' .. j.id .. ' already exists'
    end
  end
end

-- What the DAGs of one submit call share (create_jobs' `call`): the queues to wake and
-- to register, once each at the end (finish_call); and the places in the queues' order, `njobs` of them taken with one
-- INCRBY when the first DAG is written (a DAG refused after that leaves a gap, which
-- orders nothing; a call whose DAGs are all refused writes nothing). In a call of 50
-- one-job DAGs this saved 2 of 8 commands a DAG.
local function submit_call(njobs)
  return {woken = {}, known = {}, njobs = njobs, seq = false}
end

local function finish_call(call)
  local list = {}
  for q in pairs(call.known) do list[#list + 1] = q end
  if #list > 0 then redis.call('SADD', k_queues(), unpack(list)) end
  for q in pairs(call.woken) do wake(q) end
end

-- A submit of a whole DAG, or the first step of a large one, keeps its request id in the
-- DAG hash and answers a resend from there (submit_dag.lua); request.lua keeps no
-- record for it. The later steps are recorded like any call.
local function submit_answers_itself(ARGV)
  local step = ARGV[6] or ''
  return step == '' or step == 'begin' or step == 'many'
end

-- Fields at their usual value are not stored (the readers default them: pipeline/layout.py
-- and the transitions), nor are the job's id, DAG and name (its key says them): a small
-- job hash is a listpack of a few hundred bytes. `quiet`: the job is its DAG's only one,
-- whose plain run writes no stream (see unquiet in common.lua); the value it gets, '1'
-- or 'p' (settle_plain there). `call`: what a submit of many DAGs shares (submit_call),
-- or nil for a batch on its own; `at`: `now` as text, when the caller has it.
local function create_jobs(dag, jobs, now, defer, quiet, call, at)
  at = at or int(now)  -- times and scores go as text (see int)
  local in_batch, parents, run_ats = {}, {}, {}
  local ready = 0  -- leaves that go straight into the wait set
  for _, j in ipairs(jobs) do
    in_batch[j.id] = true
    for _, edge in ipairs(j.children or NONE) do
      local l = parents[edge[1]]
      if not l then l = {}; parents[edge[1]] = l end
      l[#l + 1] = j.name .. '=' .. edge[2]
    end
    local run_at = tonumber(j.run_at) or 0
    if (tonumber(j.delay_ms) or 0) > 0 then run_at = math.max(run_at, now + j.delay_ms) end
    run_ats[j.id] = run_at
    if not j.children or #j.children == 0 then
      if not defer and run_at <= now then ready = ready + 1 end
    end
  end
  -- A new leaf is written straight as `waiting` with its place in the queue (what
  -- enqueue would do after reading the job back): one INCRBY for all their places.
  local seq
  if call then
    if not call.seq then call.seq = redis.call('INCRBY', k_seq(), int(call.njobs)) - call.njobs end
    seq, call.seq = call.seq, call.seq + ready
  else
    seq = ready > 0 and redis.call('INCRBY', k_seq(), int(ready)) - ready or 0
  end
  local woken = call and call.woken or {}
  local roots, queues = {}, {}
  for _, j in ipairs(jobs) do
    local children = j.children or NONE
    local n = #children
    local run_at = run_ats[j.id]
    local root = parents[j.id] and '0' or '1'
    if j.root ~= nil then root = j.root == 1 and '1' or '0' end
    local now_ready = n == 0 and not defer and run_at <= now
    -- (the nils size it for a usual job at once: see complete.lua)
    local args = {'state', now_ready and 'waiting' or 'waiting_children', 'stage', j.stage,
      'queue', j.queue, 'max_attempts', num(j.max_attempts), 'timeout_ms', num(j.timeout_ms),
      'created', at, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
    if now_ready then
      seq = seq + 1
      args[#args + 1] = 'seq'; args[#args + 1] = int(seq % PRIO_SPAN)
    end
    put_long(args, 'params', j.params)
    local prio = j.prio or 0
    if prio ~= 0 then args[#args + 1] = 'prio'; args[#args + 1] = num(prio) end
    if j.backoff and j.backoff ~= '' then
      args[#args + 1] = 'backoff'; args[#args + 1] = j.backoff
    end
    if j.cost and j.cost ~= 1 then args[#args + 1] = 'cost'; args[#args + 1] = num(j.cost) end
    if j.tags and j.tags ~= '' then args[#args + 1] = 'tags'; args[#args + 1] = j.tags end
    if j.max_stalls and j.max_stalls ~= 0 then
      args[#args + 1] = 'max_stalls'; args[#args + 1] = num(j.max_stalls)
    end
    if run_at ~= 0 then args[#args + 1] = 'run_at'; args[#args + 1] = num(run_at) end
    if j.fallback and j.fallback ~= '' then
      args[#args + 1] = 'fallback'; args[#args + 1] = j.fallback
    end
    if root == '1' then args[#args + 1] = 'root'; args[#args + 1] = '1' end
    if quiet then args[#args + 1] = 'quiet'; args[#args + 1] = quiet end
    if n > 0 then
      args[#args + 1] = 'pending'; args[#args + 1] = int(n)
      args[#args + 1] = 'has_deps'; args[#args + 1] = '1'
      for _, edge in ipairs(children) do
        args[#args + 1] = 'd:' .. name_of(edge[1])
        args[#args + 1] = 'pending'
      end
    end
    local mine = parents[j.id]
    local inline = mine and table.concat(mine, ',')
    if inline and #inline <= PARENTS_INLINE then put_long(args, 'parents', inline) end
    hset_all(k_job(j.id), args)
    if inline and #inline > PARENTS_INLINE then add_parents(j.id, mine) end
    redis.call('SADD', k_dag_jobs(dag), j.id)
    queues[j.queue] = true
    -- A child written by an earlier step of this DAG gains this job as a parent.
    for _, edge in ipairs(children) do
      if not in_batch[edge[1]] then
        add_parents(edge[1], {j.name .. '=' .. edge[2]})
      end
    end
    if root == '1' then table.insert(roots, j.id) end
    if now_ready then
      redis.call('ZADD', k_wait(j.queue), int((1000 - prio) * PRIO_SPAN + seq % PRIO_SPAN),
        j.id)
      woken[j.queue] = true
    elseif n == 0 then
      if defer then redis.call('RPUSH', k_dag_leaves(dag), j.id) else enqueue(j.id, now) end
    end
  end
  if call then
    for q in pairs(queues) do call.known[q] = true end
  else
    for q in pairs(queues) do redis.call('SADD', k_queues(), q) end
    for q in pairs(woken) do wake(q) end
  end
  return roots
end
