-- Record a held job's progress, fenced by attempt and worker.
-- KEYS: 1 the job hash
-- ARGV: 1 attempt, 2 worker, 3 progress (JSON)
-- Returns 1 when recorded, 0 when the worker no longer holds the job.
local f = redis.call('HMGET', KEYS[1], 's', 'a', 'w')
if f[1] ~= 'active' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'g', ARGV[3])
return 1
