-- retry_dead: bring a job back from the dead-letter queue with fresh attempts, and
-- restore the parents it had failed so the DAG can still complete.
-- KEYS[1] namespace prefix
-- ARGV[1] job id
-- Returns 1, or an error when the job is not in the dead-letter queue.
--@include common.lua
--@include settle.lua
local id = ARGV[1]
if not redis.call('ZSCORE', k_dead(), id) then
  return redis.error_reply('job ' .. id .. ' is not in the dead-letter queue')
end
local dag = dag_of(id)
local d = redis.call('HMGET', k_dag(dag), 'state', 'pruning')
if d[1] == 'cancelled' then
  return redis.error_reply('DAG ' .. dag .. ' was cancelled; submit it again')
end
-- Retention has started deleting its jobs: reopening it would leave a DAG with parts
-- missing that no later prune finds.
if d[2] then
  return redis.error_reply('DAG ' .. dag .. ' is being deleted by retention; submit it again')
end
local now = now_ms()
redis.call('ZREM', k_dead(), id)
job_reopened(dag, id, 'dead')
redis.call('HSET', k_job(id), 'attempts', 0, 'stalls', 0, 'finished', '', 'run_at', 0)
restore_parents(id, dag)
emit(dag, 'retried', id, 'from', 'dead')
enqueue(id, now)
return 1
