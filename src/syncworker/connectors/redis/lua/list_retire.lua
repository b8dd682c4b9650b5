-- redis_list close: delete this worker's heartbeat; leave the workers set only when no batch
-- is left unacknowledged (otherwise the next recovery, by any worker, returns those).
--
-- KEYS[1] workers set, KEYS[2] heartbeat key, KEYS[3] registry hash. ARGV[1] worker id.
-- Returns the number of processing lists left for recovery.
redis.call('DEL', KEYS[2])
local left = redis.call('HLEN', KEYS[3])
if left == 0 then
  redis.call('SREM', KEYS[1], ARGV[1])
end
return left
