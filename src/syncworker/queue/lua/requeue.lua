-- Dead jobs of one queue back to queued, attempts reset; a job whose unique key another
-- job holds now is skipped.
-- KEYS: 1 ready, 2 dead, 3 unique, 4 wake
-- ARGV: 1 job key prefix, 2 wake token cap, then members
-- Returns how many were requeued.
local base = ARGV[1]
local SPAN = 4398046511104
local requeued = 0
for i = 3, #ARGV do
  local member = ARGV[i]
  local key = base .. member
  local f = redis.call('HMGET', key, 's', 'u', 'p', 'r')
  if f[1] == 'dead' then
    local holder = false
    if f[2] then holder = redis.call('HGET', KEYS[3], f[2]) end
    if not holder or holder == member then
      if f[2] then redis.call('HSET', KEYS[3], f[2], member) end
      redis.call('HSET', key, 's', 'queued', 'a', 0)
      redis.call('HDEL', key, 'f')
      redis.call('ZREM', KEYS[2], member)
      local ms = math.min(math.max(math.floor(tonumber(f[4]) * 1000), 0), SPAN - 1)
      redis.call('ZADD', KEYS[1], (1000 - tonumber(f[3])) * SPAN + ms, member)
      requeued = requeued + 1
    end
  end
end
if requeued > 0 then
  local cap = tonumber(ARGV[2])
  redis.call('RPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], -cap, -1)
end
return requeued
