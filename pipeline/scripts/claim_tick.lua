-- claim_tick: take one tick of a schedule, so that however many schedulers run, a tick
-- fires at most once across the fleet. Compare-and-set on the schedule's `last` key: it
-- only moves forward, and only the caller that moves it past the tick has won it.
-- KEYS[1] namespace prefix
-- ARGV[1] schedule name, ARGV[2] tick (epoch seconds), ARGV[3] '1' to fire it, '0' to
-- account for it without firing (a missed tick under the skip policy), ARGV[4] the
-- schedule's id as the caller read it (a schedule removed and added again gets a new one)
-- Returns 1: won, fire it; 2: won, skipped; 0: already taken (this tick or a later one);
-- -1: the schedule is gone or was replaced; -2: the schedule is paused.
--@include common.lua
local name, tick, fire = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local raw = redis.call('HGET', k_schedules(), name)
if not raw then return -1 end
-- Paused and id are checked here, inside the same atomic step as the claim, so a pause
-- or a remove that lands after a scheduler read the schedule still stops the firing.
local spec = cjson.decode(raw)
if spec.id ~= ARGV[4] then return -1 end
if spec.paused then return -2 end
local k_last = k_schedule_last(name)
local last = tonumber(redis.call('GET', k_last) or '')
if last and last >= tick then return 0 end
redis.call('SET', k_last, ARGV[2])
if fire then
  emit_global('', 'schedule_fired', '', 'schedule', name, 'tick', ARGV[2])
  return 1
end
emit_global('', 'schedule_skipped', '', 'schedule', name, 'tick', ARGV[2])
return 2
