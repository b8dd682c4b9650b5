-- Apply outcomes to jobs of one queue, each fenced by attempt and worker.
-- KEYS: 1 active, 2 delayed, 3 completed, 4 dead, 5 unique, 6 wake
-- ARGV: 1 job key prefix, 2 now, 3 worker, 4 wake token cap, then 7 per outcome: member,
--       attempt, kind ('c' completed, 'r' retry, 'd' dead), result ('' = none),
--       run_at, error ('' = none), stack ('' = none)
-- Returns the members whose fence failed.
local base, now, worker = ARGV[1], ARGV[2], ARGV[3]
local stale, done, removed, delayed, dead = {}, {}, {}, {}, {}
local function zadd(key, pairs)
  for s = 1, #pairs, 4000 do
    redis.call('ZADD', key, unpack(pairs, s, math.min(s + 3999, #pairs)))
  end
end
local function set_failure(key, err, stack)
  if err ~= '' then redis.call('HSET', key, 'err', err) else redis.call('HDEL', key, 'err') end
  if stack ~= '' then redis.call('HSET', key, 'stk', stack) else redis.call('HDEL', key, 'stk') end
end
for i = 5, #ARGV, 7 do
  local member = ARGV[i]
  local key = base .. member
  local f = redis.call('HMGET', key, 's', 'a', 'w', 'u')
  if f[1] ~= 'active' or f[2] ~= ARGV[i + 1] or f[3] ~= worker then
    stale[#stale + 1] = member
  else
    local kind = ARGV[i + 2]
    removed[#removed + 1] = member
    redis.call('HDEL', key, 'w', 'l')
    if kind == 'r' then
      redis.call('HSET', key, 's', 'delayed', 'r', ARGV[i + 4])
      set_failure(key, ARGV[i + 5], ARGV[i + 6])
      delayed[#delayed + 1] = ARGV[i + 4]
      delayed[#delayed + 1] = member
    else
      if kind == 'c' then
        redis.call('HSET', key, 's', 'completed', 'f', now)
        if ARGV[i + 3] ~= '' then redis.call('HSET', key, 'res', ARGV[i + 3]) end
        done[#done + 1] = now
        done[#done + 1] = member
      else
        redis.call('HSET', key, 's', 'dead', 'f', now)
        set_failure(key, ARGV[i + 5], ARGV[i + 6])
        dead[#dead + 1] = now
        dead[#dead + 1] = member
      end
      if f[4] and redis.call('HGET', KEYS[5], f[4]) == member then
        redis.call('HDEL', KEYS[5], f[4])
      end
    end
  end
end
for s = 1, #removed, 4000 do
  redis.call('ZREM', KEYS[1], unpack(removed, s, math.min(s + 3999, #removed)))
end
zadd(KEYS[2], delayed)
zadd(KEYS[3], done)
zadd(KEYS[4], dead)
if #delayed > 0 then
  -- a waiter's timeout was bounded by the earliest delayed job before this retry existed
  redis.call('RPUSH', KEYS[6], '1')
  redis.call('LTRIM', KEYS[6], -tonumber(ARGV[4]), -1)
end
return stale
