-- Shared by every script. KEYS[1] is the namespace prefix itself, e.g. "{mp}:"; it
-- carries the hash tag, so Redis Cluster routes the script to the slot holding every
-- key of the namespace. Each k_<name> below mirrors the Keys method of the same meaning in
-- pipeline/keys.py (tests/pipeline/test_keys.py checks they agree).
local P -- set from KEYS[1] at the start of every call
-- A DAG's own stream keeps its latest events: a late watcher reads the state from the DAG
-- hash, and the end event is always the newest entry, so a 10,000-job DAG still shows it.
-- (Strings: a number passed to redis.call is formatted with "%.17g" first, and on the
-- server the benchmarks run, Redis 7.0, that was a tenth of a no-op job's instructions.)
local EVENTS_PER_DAG = '10000'
local EVENTS_GLOBAL = '100000'
-- Wait-set score: priority band first (higher priority -> lower score), then FIFO sequence.
local PRIO_SPAN = 1099511627776 -- 2^40 sequence numbers per priority band

local function k_seq() return P .. 'seq' end
local function k_events() return P .. 'events' end
local function k_dead() return P .. 'dead' end
local function k_queues() return P .. 'queues' end
local function k_dags_done() return P .. 'dags:done' end
local function k_dags_failed() return P .. 'dags:failed' end
local function k_dags_building() return P .. 'dags:building' end
local function k_workers() return P .. 'workers' end
local function k_worker(id) return P .. 'worker:' .. id end
local function k_request(client) return P .. 'req:' .. client end
local function k_job(id) return P .. 'job:' .. id end
local function k_progress(id) return P .. 'job:' .. id .. ':progress' end
local function k_parents(id) return P .. 'job:' .. id .. ':parents' end
local function k_deps(id) return P .. 'job:' .. id .. ':deps' end
local function k_results(id) return P .. 'job:' .. id .. ':results' end
local function k_dag(id) return P .. 'dag:' .. id end
local function k_dag_jobs(id) return P .. 'dag:' .. id .. ':jobs' end
local function k_dag_events(id) return P .. 'dag:' .. id .. ':events' end
local function k_dag_leaves(id) return P .. 'dag:' .. id .. ':leaves' end
local function k_wait(q) return P .. 'q:' .. q .. ':wait' end
local function k_delayed(q) return P .. 'q:' .. q .. ':delayed' end
local function k_active(q) return P .. 'q:' .. q .. ':active' end
local function k_meta(q) return P .. 'q:' .. q .. ':meta' end
local function k_marker(q) return P .. 'q:' .. q .. ':marker' end
local function k_rate(q) return P .. 'q:' .. q .. ':rate' end
local function k_retention() return P .. 'retention' end
local function k_idem(key) return P .. 'idem:' .. key end
local function k_schedules() return P .. 'schedules' end
local function k_schedule_last(name) return P .. 'schedule:' .. name .. ':last' end
local function k_staged() return P .. 'staged' end
local function k_staged_users(id) return P .. 'staged:' .. id end
local function k_staged_deleting(id) return P .. 'staged:' .. id .. ':deleting' end
local function k_breaker(service) return P .. 'breaker:' .. service end
local function k_service_rate(service) return P .. 'rate:' .. service end
-- How long a finished DAG's idempotency key lives when no prune has published a window.
local IDEM_MS_DEFAULT = 86400000

-- The layout version a submit writes into its DAG hash (`v`); DAGs without it were
-- written by schema 1, whose layout every script still reads (docs/redis-layout.md).
local SCHEMA = '2'  -- text: see int

-- A job id is `<dag>/<name>` and a DAG id has no '/', so neither is stored in the job.
-- (A plain find: these run several times per job on the hot path.)
local function dag_of(id) return string.sub(id, 1, string.find(id, '/', 1, true) - 1) end
local function name_of(id) return string.sub(id, string.find(id, '/', 1, true) + 1) end

-- Long values (params, a DAG's meta) are stored in pieces of at most LONG bytes, so the
-- hash holding them stays a listpack: Redis turns a whole hash into a hashtable, about
-- three times the memory for a job, once one value is longer than
-- hash-max-listpack-value (64 by default). The field holds "\1<pieces>" and the
-- pieces are `<field>#1`..`<field>#n`; "\1" cannot begin JSON text. Beyond LONG_MAX
-- pieces the hash outgrows a listpack anyway and the value is kept whole.
local LONG, LONG_MAX = 64, 60

-- Appends `field value` (or its pieces) to `args`, an HSET argument list.
local function put_long(args, field, value)
  local n = math.ceil(#value / LONG)
  if n <= 1 or n > LONG_MAX then
    args[#args + 1] = field
    args[#args + 1] = value
    return
  end
  args[#args + 1] = field
  args[#args + 1] = '\1' .. n
  for i = 1, n do
    args[#args + 1] = field .. '#' .. i
    args[#args + 1] = string.sub(value, (i - 1) * LONG + 1, i * LONG)
  end
end

-- The value as put_long stored it, given what HGET/HMGET read for `field`.
local function get_long(key, field, value)
  if not value or string.byte(value, 1) ~= 1 then return value end
  local names = {}
  for i = 1, tonumber(string.sub(value, 2)) do names[i] = field .. '#' .. i end
  return table.concat(redis.call('HMGET', key, unpack(names)))
end

-- HSET with an argument list of any length (unpack has a limit of a few thousand).
local function hset_all(key, args)
  for i = 1, #args, 1000 do
    redis.call('HSET', key, unpack(args, i, math.min(i + 999, #args)))
  end
end

-- A job's edges live in its own hash (schema 2): the child's `parents` field lists
-- "name=policy" entries ("*": too many to inline, they are in the job's parents hash),
-- and the parent holds one `d:<child name>` field per dependency with its state
-- (pending | done | dead | failed). Schema 1 kept both in separate hashes
-- (k_parents, k_deps), which are read when the fields are absent.
local PARENTS_INLINE = LONG * LONG_MAX

-- {parent id, policy, parent id, policy, ...}
local function parents_of(id)
  local v = redis.call('HGET', k_job(id), 'parents')
  if not v or v == '*' then return redis.call('HGETALL', k_parents(id)) end
  v = get_long(k_job(id), 'parents', v)
  local dag, out = dag_of(id), {}
  for name, policy in string.gmatch(v, '([^,=]+)=([^,]+)') do
    out[#out + 1] = dag .. '/' .. name
    out[#out + 1] = policy
  end
  return out
end

-- Adds parent edges ("name=policy" strings) to an existing job.
local function add_parents(id, entries)
  local job = k_job(id)
  local v = redis.call('HGET', job, 'parents')
  if v == '*' or (not v and redis.call('EXISTS', k_parents(id)) == 1) then
    for _, e in ipairs(entries) do
      local name, policy = string.match(e, '([^=]+)=(.+)')
      redis.call('HSET', k_parents(id), dag_of(id) .. '/' .. name, policy)
    end
    return
  end
  local old = get_long(job, 'parents', v)
  local joined = table.concat(entries, ',')
  if old and old ~= '' then joined = old .. ',' .. joined end
  if v and string.byte(v, 1) == 1 then
    local pieces = {}
    for i = 1, tonumber(string.sub(v, 2)) do pieces[i] = 'parents#' .. i end
    redis.call('HDEL', job, unpack(pieces))
  end
  if #joined > PARENTS_INLINE then
    local args = {}
    local dag = dag_of(id)
    for name, policy in string.gmatch(joined, '([^,=]+)=([^,]+)') do
      args[#args + 1] = dag .. '/' .. name
      args[#args + 1] = policy
    end
    hset_all(k_parents(id), args)
    redis.call('HSET', job, 'parents', '*')
    return
  end
  local args = {}
  put_long(args, 'parents', joined)
  redis.call('HSET', job, unpack(args))
end

-- The state of parent p's dependency on `child`, and where it is kept.
local function dep_of(p, child)
  local field = 'd:' .. name_of(child)
  local v = redis.call('HGET', k_job(p), field)
  if v then return v, k_job(p), field end
  return redis.call('HGET', k_deps(p), child), k_deps(p), child
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- TIME's reply (seconds, microseconds: both text, unpadded) as milliseconds, in text.
local function ms_text(sec, usec) return sec .. string.sub('00000' .. usec, -6, -4) end

-- now_ms, and the same time as the text redis.call is given, built from TIME's digits:
-- formatting the number (int) would cost more than reading the clock.
local function clock()
  local t = redis.call('TIME')
  local at = ms_text(t[1], t[2])
  return tonumber(at), at
end

-- A whole number as redis.call's argument. Redis before 7.2 formats a number argument
-- with snprintf("%.17g"): ~2,400 instructions for a small count, ~4,200 for a time in ms
-- (7.0.15; benchmarks/lua_arg_cost.py). Text costs it nothing, string.format('%d')
-- ~1,800-2,600, a count taken from a table ~150: a one-job submit passed nine numbers, 8 %
-- of its instructions there. Redis 7.2 and Valkey print a whole number with ll2string
-- (~200-800), where string.format would be the cost: there `int` hands the number on.
-- The text is the same either way, so only the speed depends on the version read here.
local SLOW_NUMBERS = (redis.REDIS_VERSION_NUM or 0) < 0x070200
local COUNTS = {}  -- 0..99 as text, filled as they are first used (no `string` at load)
local int
if SLOW_NUMBERS then
  int = function(n)
    local t = COUNTS[n]
    if t then return t end
    t = string.format('%d', n)
    if n >= 0 and n < 100 and n % 1 == 0 then COUNTS[n] = t end
    return t
  end
else
  int = function(n) return n end
end
-- A number the client sent (it may have a fraction: passed on as it is).
local function num(v)
  if SLOW_NUMBERS and v % 1 == 0 and v > -1e15 and v < 1e15 then return int(v) end
  return v
end

-- A one-job DAG is "quiet" while its run is the plain one (claimed once, completed): its
-- `active`, `completed` and `dag_completed` events are not written to a stream but read
-- from its hashes, which hold them anyway (`started`, `worker`, `attempts`, `finished`).
-- Three XADDs, the stream's 4 KB node and its deletion were a third of the server time of
-- a no-op job. The DAG hash's `quiet` names the job, the job hash has `quiet` = 1 (so the
-- claim and the completion, which read the job hash already, know without another read).
-- Anything else (progress, a failure, a stall, a release, a cancel, children, a follower
-- that needs a stream to block on) first writes those events into the stream, with the
-- ids quiet_events gives them, and ends the quiet: from then on the DAG is like any other.
-- The job's `quiet` is 'p' where the DAG has no idempotency key and no webhook, so its
-- close needs nothing from the DAG hash (settle_plain); '1' otherwise, and in DAGs
-- written before 'p' existed.

-- The events a quiet DAG's stream would hold so far, as XADD arguments {id, field, value,
-- ...}. Ids come from the times in the hashes (`<ms>-<n>`, increasing), the same ones
-- whether a reader is shown them (pipeline/events.py) or unquiet writes them, so a
-- watcher resuming after one misses nothing and sees nothing twice.
local function quiet_events(dag, name)
  local id = dag .. '/' .. name
  local f = redis.call('HMGET', k_job(id), 'started', 'worker', 'attempts', 'state', 'finished')
  local d = redis.call('HMGET', k_dag(dag), 'state', 'finished')
  local out = {}
  local last_ms, n = 0, 0
  local function at(ms)
    ms = tonumber(ms) or 0
    if ms > last_ms then last_ms, n = ms, 1 else n = n + 1 end
    return string.format('%d-%d', last_ms, n)
  end
  if f[1] and f[1] ~= '' then
    out[#out + 1] = {at(f[1]), 'ev', 'active', 'job', id, 'worker', f[2] or '',
      'attempt', f[3] or '1'}
  end
  if f[4] == 'completed' then out[#out + 1] = {at(f[5]), 'ev', 'completed', 'job', id} end
  if d[2] and d[2] ~= '' then
    out[#out + 1] = {at(d[2]), 'ev', 'dag_' .. d[1], 'job', ''}
  end
  return out
end

-- End a DAG's quiet (see above): its events so far go into its stream. Every transition
-- that writes an event of a DAG other than the three calls this before it changes the
-- DAG or its job, so what quiet_events reads is still the history up to now.
local function unquiet(dag)
  local name = redis.call('HGET', k_dag(dag), 'quiet')
  if not name then return end
  for _, e in ipairs(quiet_events(dag, name)) do
    redis.call('XADD', k_dag_events(dag), 'MAXLEN', '~', EVENTS_PER_DAG, unpack(e))
  end
  redis.call('HDEL', k_dag(dag), 'quiet')
  redis.call('HDEL', k_job(dag .. '/' .. name), 'quiet')
end

-- An event on the DAG's own stream (a late watcher replays it), for a DAG known not to
-- be quiet ...
local function emit_loud(dag, ev, job, ...)
  redis.call('XADD', k_dag_events(dag), 'MAXLEN', '~', EVENTS_PER_DAG, '*',
    'ev', ev, 'job', job, ...)
end

local function emit(dag, ev, job, ...)
  unquiet(dag)
  emit_loud(dag, ev, job, ...)
end

-- ... and, for what a fleet operator follows, on the namespace-wide stream too. An event
-- of no job (a DAG's or the fleet's) has no `job` field: readers take it as ''
-- (pipeline/events.py); two arguments fewer saved a submit ~1 % of its instructions.
local function emit_global(dag, ev, job, ...)
  if job == '' then
    redis.call('XADD', k_events(), 'MAXLEN', '~', EVENTS_GLOBAL, '*', 'ev', ev, 'dag', dag, ...)
  else
    redis.call('XADD', k_events(), 'MAXLEN', '~', EVENTS_GLOBAL, '*',
      'ev', ev, 'dag', dag, 'job', job, ...)
  end
end

-- Wake one idle worker blocked on the queue's marker. The marker list never holds more
-- than one item: a worker that claims and still sees work re-arms it (claim_next).
local function wake(q)
  if redis.call('LLEN', k_marker(q)) == 0 then
    redis.call('LPUSH', k_marker(q), '1')
  end
end

-- Drop a job's partial progress from its DAG's roll-up (it failed or stalled).
local function reset_pct(id, dag)
  local old = tonumber(redis.call('HGET', k_job(id), 'pct') or '0') or 0
  if old > 0 then
    redis.call('HINCRBYFLOAT', k_dag(dag), 'pct_sum', -old)
    redis.call('HSET', k_job(id), 'pct', 0)
  end
end

-- Put a job whose dependencies are satisfied into its queue (or the delayed set).
-- A job's place in its priority band is fixed when it first enters the wait set (its
-- `seq`, kept in the job hash): handed back, reclaimed after a stall or retried, it
-- returns to that place, ahead of the jobs that became ready after it.
local function enqueue(id, now)
  local f = redis.call('HMGET', k_job(id), 'queue', 'prio', 'run_at', 'seq')
  local q, prio, run_at = f[1], tonumber(f[2]) or 0, tonumber(f[3] or '0') or 0
  if run_at > now then
    redis.call('HSET', k_job(id), 'state', 'delayed')
    redis.call('ZADD', k_delayed(q), num(run_at), id)
    -- The queue's meta keeps the earliest due time (-1: none), so a claim needs no read
    -- of the delayed set until something falls due (see promote_due). Unrecorded stays
    -- unrecorded: the next claim reads the set and records the true earliest.
    local due = tonumber(redis.call('HGET', k_meta(q), 'next_due'))
    if due and (due < 0 or run_at < due) then
      redis.call('HSET', k_meta(q), 'next_due', num(run_at))
    end
  else
    local seq = tonumber(f[4])
    if seq then
      redis.call('HSET', k_job(id), 'state', 'waiting')
    else
      seq = redis.call('INCR', k_seq()) % PRIO_SPAN
      redis.call('HSET', k_job(id), 'state', 'waiting', 'seq', int(seq))
    end
    redis.call('ZADD', k_wait(q), int((1000 - prio) * PRIO_SPAN + seq), id)
    wake(q)
  end
end

-- Drop the DAG's idempotency key, unless a newer DAG holds it by now.
local function release_idem(dag)
  local idem = redis.call('HGET', k_dag(dag), 'idem')
  if idem and idem ~= '' and redis.call('GET', k_idem(idem)) == dag then
    redis.call('DEL', k_idem(idem))
  end
end

-- A DAG submitted with a webhook keeps in its `webhook` field the JSON the client wrote
-- (pipeline/webhooks.py encode_spec: url, service, roots, stage, queue, attempts,
-- backoff, timeout_ms). The transition that closes it calls open_delivery, so the
-- announcement is written atomically with the close and no close goes unannounced: a
-- one-job DAG whose job (stage `webhook`, stages/webhook.py) posts the event. It is an
-- ordinary job: retries wait in the delayed set (no worker slot is held), the last
-- failure goes to the dead-letter queue, and `service` in its params puts it behind the
-- host's circuit breaker. Its DAG id is the event id, `wh-<ms>-<n>`, new on every close
-- (a DAG reopened by retry_dead and closed again announces again). The delivery job
-- receives the roots' results (or errors) as a parent receives its children's, copied
-- into its results hash; a result over WEBHOOK_RESULT_MAX bytes is replaced by its size.
local WEBHOOK_JOB = 'deliver'
local WEBHOOK_ROOTS_MAX = 16
local WEBHOOK_RESULT_MAX = 65536
local WEBHOOK_PRIO = 1000  -- a delivery is small: it goes before the backlog

-- Returns the event id, or nil when the spec cannot be read (nothing is written then:
-- the close itself must not fail half-way, Lua does not roll back).
local function open_delivery(dag, state, now, spec)
  local ok, w = pcall(cjson.decode, spec)
  if not ok or type(w) ~= 'table' or type(w.url) ~= 'string' or type(w.queue) ~= 'string'
      or type(w.stage) ~= 'string' then
    return nil
  end
  local n = redis.call('INCR', k_seq()) % PRIO_SPAN
  local ev = string.format('wh-%d-%d', now, n)
  local id = ev .. '/' .. WEBHOOK_JOB
  local c = redis.call('HMGET', k_dag(dag), 'total', 'dead', 'upstream', 'cancelled', 'created',
    'meta')
  local results = {}
  if type(w.roots) == 'table' then
    for i, name in ipairs(w.roots) do
      if i > WEBHOOK_ROOTS_MAX then break end
      local rid = dag .. '/' .. tostring(name)
      local f = redis.call('HMGET', k_job(rid), 'state', 'result', 'error')
      if f[1] == 'completed' and f[2] then
        results[#results + 1] = rid
        if #f[2] > WEBHOOK_RESULT_MAX then
          results[#results + 1] = cjson.encode({omitted_bytes = #f[2]})
        else
          results[#results + 1] = f[2]
        end
      elseif f[3] and f[3] ~= '' then
        results[#results + 1] = '!' .. rid
        results[#results + 1] = f[3]
      end
    end
  end
  local event = {id = ev, type = 'dag.' .. state, created = now,
    dag = {id = dag, state = state, total = tonumber(c[1]) or 0, dead = tonumber(c[2]) or 0,
      upstream_failed = tonumber(c[3]) or 0, cancelled = tonumber(c[4]) or 0,
      created = tonumber(c[5]) or 0, finished = now}}
  local params = cjson.encode({url = w.url, service = w.service, event = event,
    meta = get_long(k_dag(dag), 'meta', c[6]) or '{}'})
  local args = {'state', 'waiting', 'stage', w.stage, 'queue', w.queue,
    'max_attempts', tonumber(w.attempts) or 1, 'timeout_ms', tonumber(w.timeout_ms) or 60000,
    'created', now, 'seq', n, 'prio', WEBHOOK_PRIO, 'root', '1', 'quiet', 'p'}
  put_long(args, 'params', params)
  if type(w.backoff) == 'string' and w.backoff ~= '' then
    args[#args + 1] = 'backoff'; args[#args + 1] = w.backoff
  end
  if #results > 0 then
    args[#args + 1] = 'has_deps'; args[#args + 1] = '1'
    hset_all(k_results(id), results)
  end
  hset_all(k_job(id), args)
  redis.call('SADD', k_dag_jobs(ev), id)
  local d = {'v', SCHEMA, 'state', 'running', 'total', 1, 'open', 1, 'roots', 1, 'created', now,
    'quiet', WEBHOOK_JOB}
  put_long(d, 'meta', cjson.encode({webhook_for = dag, event = 'dag.' .. state}))
  redis.call('HSET', k_dag(ev), unpack(d))
  redis.call('ZADD', k_wait(w.queue), (1000 - WEBHOOK_PRIO) * PRIO_SPAN + n, id)
  redis.call('SADD', k_queues(), w.queue)
  wake(w.queue)
  emit_global(ev, 'submitted', '', 'jobs', 1)
  return ev
end

-- The DAG counts its jobs still open (not completed, dead, upstream_failed or
-- cancelled), so "is it finished?" is one HINCRBY on the hot path, not a read of every
-- counter; `completed` is derived (total - open - dead - upstream - cancelled).
-- Close the DAG once no job is open. It is completed when none of its roots (jobs nobody
-- depends on) failed, failed otherwise; a cancelled DAG stays cancelled. retry_dead
-- reopens a finished DAG and a later call closes it again.
-- `quiet`: the caller (a completion) knows the DAG is quiet and stays so: its end event is
-- then read from the hash too.
local function settle_dag(dag, now, quiet)
  local d = redis.call('HMGET', k_dag(dag), 'state', 'open', 'roots_failed', 'finished', 'idem',
    'webhook')
  -- A cancelled DAG stops answering for its idempotency key at once: submitting again
  -- starts the work over instead of returning the cancelled DAG.
  if d[1] == 'cancelled' then release_idem(dag) end
  if not d[2] or tonumber(d[2]) > 0 or (d[4] and d[4] ~= '') then return end
  local state = d[1]
  if state == 'running' then
    if (tonumber(d[3]) or 0) > 0 then state = 'failed' else state = 'completed' end
  end
  -- A webhook (read with the rest: no call when there is none) is announced in this
  -- same transition; the DAG names its latest event.
  local ev = d[6] and open_delivery(dag, state, now, get_long(k_dag(dag), 'webhook', d[6]))
  local at = int(now)
  if ev then
    redis.call('HSET', k_dag(dag), 'state', state, 'finished', at, 'webhook_event', ev)
  else
    redis.call('HSET', k_dag(dag), 'state', state, 'finished', at)
  end
  if state ~= 'cancelled' then
    -- The key keeps returning the finished DAG for the window every pruning node
    -- publishes, then expires (or goes with the DAG if that is pruned first).
    local idem = d[5]  -- read with the rest: settling is on the hot path
    if idem and idem ~= '' and redis.call('GET', k_idem(idem)) == dag then
      local ms = tonumber(redis.call('HGET', k_retention(), 'idem_ms')) or IDEM_MS_DEFAULT
      redis.call('PEXPIRE', k_idem(idem), ms)
    end
  end
  if state == 'completed' then
    redis.call('ZADD', k_dags_done(), at, dag)
  else
    redis.call('ZADD', k_dags_failed(), at, dag)
  end
  if not quiet then emit(dag, 'dag_' .. state, '') end
  emit_global(dag, 'dag_' .. state, '')
end

-- The close of a quiet DAG whose job is 'p' (see quiet_events), by its job's completion.
-- Nothing else can have happened to the DAG, since every other transition ends the
-- quiet: it is running, with one job open, no root failed and no progress, and it has
-- no idempotency key or webhook to attend to. So settle_dag's outcome is known without
-- its HINCRBY and HMGET of the DAG hash: two of the sixteen Redis calls of a no-op job.
-- `at`: the time of the completion, as text (int).
local function settle_plain(dag, at)
  redis.call('HSET', k_dag(dag), 'state', 'completed', 'finished', at, 'open', '0')
  redis.call('ZADD', k_dags_done(), at, dag)
  emit_global(dag, 'dag_completed', '')
end

-- A job reached a terminal state other than completed; `as` names the DAG counter it now
-- counts in: dead, upstream or cancelled.
local function job_ended(dag, id, as, now)
  redis.call('HINCRBY', k_dag(dag), as, '1')
  if redis.call('HGET', k_job(id), 'root') == '1' then
    redis.call('HINCRBY', k_dag(dag), 'roots_failed', '1')
  end
  if redis.call('HINCRBY', k_dag(dag), 'open', '-1') <= 0 then settle_dag(dag, now) end
end

-- Undo job_ended: the job is live again (retried from the dead-letter queue, or its
-- failed dependency was). Reopens a finished DAG.
local function job_reopened(dag, id, from)
  redis.call('HINCRBY', k_dag(dag), from, -1)
  if redis.call('HGET', k_job(id), 'root') == '1' then
    redis.call('HINCRBY', k_dag(dag), 'roots_failed', -1)
  end
  redis.call('HINCRBY', k_dag(dag), 'open', 1)
  local d = redis.call('HMGET', k_dag(dag), 'state', 'finished')
  if d[2] and d[2] ~= '' then
    if d[1] == 'failed' or d[1] == 'completed' then
      redis.call('HSET', k_dag(dag), 'state', 'running')
    end
    redis.call('HSET', k_dag(dag), 'finished', '')
    local idem = redis.call('HGET', k_dag(dag), 'idem')
    if idem and idem ~= '' and redis.call('GET', k_idem(idem)) == dag then
      redis.call('PERSIST', k_idem(idem))
    end
    redis.call('ZREM', k_dags_failed(), dag)
    redis.call('ZREM', k_dags_done(), dag)
  end
end
