-- Every transition runs through request(): a call may be sent twice (its reply was lost
-- to a timeout, a dropped connection or a restart), and the second send must not run it
-- again. The client appends two arguments, taken off ARGV before the transition sees
-- it: the request id "<client>:<seq>" and a mode: 'n' a new request, 'r' a resend, ''
-- no record (pipelined calls; a submit keeps its request id with the DAG instead).
--
-- One record per client (thread): the sequence number and reply of its latest request.
-- A resend of that request gets the recorded reply; an older request that arrives
-- after a newer one ran (it was delayed on a connection the client gave up on) is
-- refused, never run. Error replies are not recorded: a resend runs again, and
-- transitions check everything before they write (a failed check writes nothing).
-- A day: a worker rides out an outage of any length and then resends its call in doubt,
-- which must still find its record (a claim resent without it would take other jobs and
-- leave the first ones to lapse). The cost is one small record per client thread.
local REQUEST_TTL_MS = '86400000'  -- a string: see EVENTS_PER_DAG

-- `compact` and `expand` (optional) let a transition keep a smaller record and rebuild
-- its reply from it on a resend (a claim keeps the ids it handed out). `answers_itself`
-- (optional) says, from the arguments, that the transition finds what a first send did
-- and answers a resend from it (a submit keeps its request id with its DAG): no record
-- is kept then, which saved a submit 6 us of its 40 of server time. Such a call that
-- arrives late, after a newer one of its client, is not refused but answered the same.
-- For a transition that a second run answers as the first did (a read; a write that
-- finds itself done): it needs no record.
local function runs_twice_alike() return true end

local function request(KEYS, ARGV, transition, compact, expand, answers_itself)
  local n = #ARGV
  local mode, rid = ARGV[n], ARGV[n - 1]
  ARGV[n], ARGV[n - 1] = nil, nil
  P = KEYS[1]
  if mode == '' or (answers_itself and answers_itself(ARGV)) then
    return transition(KEYS, ARGV)
  end
  local colon = string.find(rid, ':%d+$')
  local digits = string.sub(rid, colon + 1)  -- compared as text: tonumber is a strtod
  local key = k_request(string.sub(rid, 1, colon - 1))
  -- The record is "<seq>:<msgpack of {reply}>": the sequence number is read from its
  -- first bytes (GETRANGE, no copy of the reply), the reply read only for a resend.
  local head = redis.call('GETRANGE', key, '0', '24')
  if head ~= '' then
    local at = string.find(head, ':', 1, true)
    local last = string.sub(head, 1, at - 1)
    if last == digits then
      local prev = redis.call('GET', key)
      local rec = cmsgpack.unpack(string.sub(prev, at + 1))[1]
      if expand then return expand(rec) end
      return rec
    end
    if #last > #digits or (#last == #digits and last > digits) then
      return redis.error_reply('STALE request ' .. rid .. ': a newer one of this client ran')
    end
  end
  local reply = transition(KEYS, ARGV)
  if type(reply) == 'table' and reply.err then return reply end
  local rec = reply
  if compact then rec = compact(reply) end
  redis.call('SET', key, digits .. ':' .. cmsgpack.pack({rec}), 'PX', REQUEST_TTL_MS)
  return reply
end
