-- Take the lock if free and hand out the next fencing token, atomically.
-- KEYS[1] lock key, KEYS[2] fencing counter key; ARGV[1] holder id, ARGV[2] ttl in ms.
-- Returns the fencing token, or false when another holder has the lock.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return false
