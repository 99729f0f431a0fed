-- staged_deleted: what became of a deletion staged_release allowed.
-- KEYS[1] namespace prefix
-- ARGV[1] object id, ARGV[2] the token it was marked with, ARGV[3] '1': deleted from
-- the store (its record goes too), '0': not deleted (the store failed: kept, tried again)
-- Returns 1, or 0 when the mark was not the caller's any more (it expired).
--@include common.lua
local id = ARGV[1]
if redis.call('GET', k_staged_deleting(id)) ~= ARGV[2] then return 0 end
redis.call('DEL', k_staged_deleting(id))
if ARGV[3] == '1' then
  -- No submit held it meanwhile: holds wait while the mark is there.
  redis.call('DEL', k_staged_users(id))
  redis.call('HDEL', k_staged(), id)
end
return 1
