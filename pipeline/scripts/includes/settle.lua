-- Propagation along child -> parent edges (needs common.lua).
--
-- Each parent keeps the state of each dependency: pending | done | dead | failed (dep_of).
-- `pending` on the parent counts children still pending; `failed_deps` counts children
-- that died across a "fail" edge. A parent runs when pending reaches 0 while it is in
-- state waiting_children; it is upstream_failed while failed_deps > 0.

-- A child completed: hand its result to each parent still waiting for it.
local function release_parents(id, result, now)
  local edges = parents_of(id)
  for i = 1, #edges, 2 do
    local p = edges[i]
    local st, key, field = dep_of(p, id)
    if st == 'pending' then
      redis.call('HSET', key, field, 'done')
      redis.call('HSET', k_results(p), id, result)
      local left = redis.call('HINCRBY', k_job(p), 'pending', '-1')
      if left <= 0 and redis.call('HGET', k_job(p), 'state') == 'waiting_children' then
        enqueue(p, now)
      end
    end
  end
end

-- A job ended without a result (dead, or upstream_failed): apply each edge's policy.
-- Iterative, so a long chain of parents cannot overflow the Lua stack.
local function fail_parents(id, dag, err, now)
  local stack = {id}
  while #stack > 0 do
    local child = table.remove(stack)
    local edges = parents_of(child)
    for i = 1, #edges, 2 do
      local p, policy = edges[i], edges[i + 1]
      local st, key, field = dep_of(p, child)
      if st == 'pending' then
        if policy == 'fail' then
          redis.call('HSET', key, field, 'dead')
          local n = redis.call('HINCRBY', k_job(p), 'failed_deps', 1)
          if n == 1 and redis.call('HGET', k_job(p), 'state') == 'waiting_children' then
            redis.call('HSET', k_job(p), 'state', 'upstream_failed', 'finished', now,
              'error', cjson.encode({type = 'UpstreamFailed',
                message = 'dependency ' .. child .. ' failed'}))
            emit(dag, 'upstream_failed', p, 'cause', child)
            job_ended(dag, p, 'upstream', now)
            table.insert(stack, p)
          end
        else
          redis.call('HSET', key, field, 'failed')
          if policy == 'continue' then
            redis.call('HSET', k_results(p), '!' .. child, err)
          end
          local left = redis.call('HINCRBY', k_job(p), 'pending', -1)
          if left <= 0 and redis.call('HGET', k_job(p), 'state') == 'waiting_children' then
            enqueue(p, now)
          end
        end
      end
    end
  end
end

-- A dead job is being retried: undo what fail_parents did, where the parent has not run.
local function restore_parents(id, dag)
  local stack = {id}
  while #stack > 0 do
    local child = table.remove(stack)
    local edges = parents_of(child)
    for i = 1, #edges, 2 do
      local p = edges[i]
      local st, key, field = dep_of(p, child)
      if st == 'dead' then
        redis.call('HSET', key, field, 'pending')
        local n = redis.call('HINCRBY', k_job(p), 'failed_deps', -1)
        if n == 0 and redis.call('HGET', k_job(p), 'state') == 'upstream_failed' then
          redis.call('HSET', k_job(p), 'state', 'waiting_children', 'finished', '', 'error', '')
          job_reopened(dag, p, 'upstream')
          table.insert(stack, p)
        end
      elseif st == 'failed' and redis.call('HGET', k_job(p), 'state') == 'waiting_children' then
        redis.call('HSET', key, field, 'pending')
        redis.call('HDEL', k_results(p), '!' .. child)
        redis.call('HINCRBY', k_job(p), 'pending', 1)
      end
    end
  end
end

-- Move a job to the dead-letter queue and tell its parents.
local function kill_job(id, dag, err, now)
  local at = int(now)
  redis.call('HSET', k_job(id), 'state', 'dead', 'finished', at, 'error', err, 'owner', '')
  redis.call('ZADD', k_dead(), at, id)
  emit(dag, 'dead', id, 'error', err)
  emit_global(dag, 'dead', id)
  fail_parents(id, dag, err, now)
  job_ended(dag, id, 'dead', now)
end
