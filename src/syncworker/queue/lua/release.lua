-- Hand held jobs of one queue back unfinished: queued at once, the attempt not counted.
-- KEYS: 1 ready, 2 active, 3 wake
-- ARGV: 1 job key prefix, 2 worker, 3 wake token cap, then pairs: member, attempt
-- Returns how many were released.
local base, worker = ARGV[1], ARGV[2]
local SPAN = 4398046511104
local released = 0
for i = 4, #ARGV, 2 do
  local member = ARGV[i]
  local key = base .. member
  local f = redis.call('HMGET', key, 's', 'a', 'w', 'p', 'r')
  if f[1] == 'active' and f[2] == ARGV[i + 1] and f[3] == worker then
    redis.call('HDEL', key, 'w', 'l')
    redis.call('HSET', key, 's', 'queued', 'a', tonumber(f[2]) - 1)
    redis.call('ZREM', KEYS[2], member)
    local ms = math.min(math.max(math.floor(tonumber(f[5]) * 1000), 0), SPAN - 1)
    redis.call('ZADD', KEYS[1], (1000 - tonumber(f[4])) * SPAN + ms, member)
    released = released + 1
  end
end
if released > 0 then
  local cap = tonumber(ARGV[3])
  redis.call('RPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], -cap, -1)
end
return released
