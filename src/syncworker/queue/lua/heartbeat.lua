-- Extend the leases of jobs one worker holds in one queue.
-- KEYS: 1 active
-- ARGV: 1 job key prefix, 2 worker, 3 lease_until, then pairs: member, attempt
-- Returns the members the worker no longer holds.
local base, worker, lease = ARGV[1], ARGV[2], ARGV[3]
local lost, held = {}, {}
for i = 4, #ARGV, 2 do
  local member = ARGV[i]
  local key = base .. member
  local f = redis.call('HMGET', key, 's', 'a', 'w')
  if f[1] == 'active' and f[2] == ARGV[i + 1] and f[3] == worker then
    redis.call('HSET', key, 'l', lease)
    held[#held + 1] = lease
    held[#held + 1] = member
  else
    lost[#lost + 1] = member
  end
end
for s = 1, #held, 4000 do
  redis.call('ZADD', KEYS[1], 'XX', unpack(held, s, math.min(s + 3999, #held)))
end
return lost
