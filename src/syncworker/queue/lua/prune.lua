-- Delete up to N finished jobs of one queue (completed or dead) finished at or before a time.
-- KEYS: 1 the state's zset (scored by finished time)
-- ARGV: 1 job key prefix, 2 cutoff (epoch s), 3 limit
-- Returns how many were deleted.
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, member in ipairs(members) do
  redis.call('DEL', ARGV[1] .. member)
end
for s = 1, #members, 4000 do
  redis.call('ZREM', KEYS[1], unpack(members, s, math.min(s + 3999, #members)))
end
return #members
