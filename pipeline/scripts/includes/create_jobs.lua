-- Write a batch of new jobs of one DAG (needs common.lua).
--
-- `jobs` is a decoded JSON list; each entry: id, name, stage, queue, params (a JSON
-- string), prio, max_attempts, backoff (JSON string), timeout_ms, cost, tags, max_stalls,
-- run_at (unix ms, 0 = none), delay_ms (from now),
-- children: {{child_id, policy}, ...}. Children must come before their parents in the
-- list (the client sends them in topological order). Jobs with no children are enqueued,
-- or, with `defer`, listed in the DAG's leaves list for a later step to enqueue (a large
-- DAG is written in several steps and runs only once all of it is there). `root` (1|0),
-- when given, says whether no job of the whole DAG depends on the job.
-- Returns the ids of the batch's roots.
local function create_jobs(dag, jobs, now, defer)
  local has_parent = {}
  for _, j in ipairs(jobs) do
    for _, edge in ipairs(j.children) do has_parent[edge[1]] = true end
  end
  local roots = {}
  for _, j in ipairs(jobs) do
    local n = #j.children
    local run_at = tonumber(j.run_at) or 0
    if (tonumber(j.delay_ms) or 0) > 0 then run_at = math.max(run_at, now + j.delay_ms) end
    local root = has_parent[j.id] and '0' or '1'
    if j.root ~= nil then root = j.root == 1 and '1' or '0' end
    redis.call('HSET', k_job(j.id),
      'id', j.id, 'dag', dag, 'name', j.name, 'stage', j.stage, 'queue', j.queue,
      'params', j.params, 'prio', j.prio, 'max_attempts', j.max_attempts,
      'backoff', j.backoff, 'timeout_ms', j.timeout_ms, 'cost', j.cost, 'tags', j.tags,
      'max_stalls', j.max_stalls, 'run_at', run_at, 'fallback', j.fallback or '', 'attempts', 0, 'stalls', 0,
      'pending', n, 'failed_deps', 0, 'has_deps', n > 0 and '1' or '0', 'root', root,
      'pct', 0, 'created', now, 'state', 'waiting_children')
    redis.call('SADD', k_dag_jobs(dag), j.id)
    redis.call('SADD', P .. 'queues', j.queue)
    for _, edge in ipairs(j.children) do
      redis.call('HSET', k_deps(j.id), edge[1], 'pending')
      redis.call('HSET', k_parents(edge[1]), j.id, edge[2])
    end
    if root == '1' then table.insert(roots, j.id) end
  end
  for _, j in ipairs(jobs) do
    if #j.children == 0 then
      if defer then redis.call('RPUSH', k_dag_leaves(dag), j.id) else enqueue(j.id, now) end
    end
  end
  return roots
end
