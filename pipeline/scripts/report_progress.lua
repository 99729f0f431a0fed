-- report_progress: a running job's percent, message and stage fields (fps, speed, eta).
-- KEYS[1] namespace prefix
-- ARGV[1] job id, ARGV[2] token, ARGV[3] percent, ARGV[4] message, then field/value pairs
-- Returns 1, or 0 when the token no longer owns the job.
--@include common.lua
local id, token = ARGV[1], ARGV[2]
local f = redis.call('HMGET', k_job(id), 'owner', 'pct')
local dag = dag_of(id)
if f[1] ~= token then return 0 end
local pct = tonumber(ARGV[3])
local fields = {'percent', pct, 'message', ARGV[4]}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', k_progress(id), unpack(fields))
redis.call('HSET', k_job(id), 'pct', pct)
redis.call('HINCRBYFLOAT', k_dag(dag), 'pct_sum', pct - (tonumber(f[2]) or 0))
emit(dag, 'progress', id, unpack(fields))
return 1
