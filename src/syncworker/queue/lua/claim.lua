-- Claim up to N due jobs of one queue.
-- KEYS: 1 ready, 2 delayed, 3 active, 4 dead, 5 unique, 6 wake
-- ARGV: 1 job key prefix, 2 now, 3 limit, 4 worker, 5 lease_until, 6 housekeeping cap,
--       7 wake token cap
-- Returns per claimed job: member, task, data, priority, run_at, enqueued_at, attempts,
-- max_attempts, unique key, timeout_s, progress, error, stack.
local base, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cap = tonumber(ARGV[6])
local SPAN = 4398046511104
local function ready_score(priority, run_at)
  local ms = math.min(math.max(math.floor(tonumber(run_at) * 1000), 0), SPAN - 1)
  return (1000 - tonumber(priority)) * SPAN + ms
end
local function zadd(key, pairs)
  for s = 1, #pairs, 4000 do
    redis.call('ZADD', key, unpack(pairs, s, math.min(s + 3999, #pairs)))
  end
end
local function zrem(key, members)
  for s = 1, #members, 4000 do
    redis.call('ZREM', key, unpack(members, s, math.min(s + 3999, #members)))
  end
end
-- 1. delayed jobs that fell due become queued
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, cap)
local ready = {}
for _, member in ipairs(due) do
  local key = base .. member
  local f = redis.call('HMGET', key, 'p', 'r')
  redis.call('HSET', key, 's', 'queued')
  ready[#ready + 1] = ready_score(f[1], f[2])
  ready[#ready + 1] = member
end
zrem(KEYS[2], due)
-- 2. expired leases: claimable again, or dead when that attempt was the last
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. now, 'LIMIT', 0, cap)
local dead = {}
for _, member in ipairs(expired) do
  local key = base .. member
  local f = redis.call('HMGET', key, 'p', 'r', 'a', 'x', 'u')
  redis.call('HDEL', key, 'w', 'l')
  if tonumber(f[3]) >= tonumber(f[4]) then
    redis.call('HSET', key, 's', 'dead', 'f', now,
      'err', 'lease expired after ' .. f[3] .. ' attempts')
    redis.call('HDEL', key, 'stk')
    dead[#dead + 1] = now
    dead[#dead + 1] = member
    if f[5] and redis.call('HGET', KEYS[5], f[5]) == member then
      redis.call('HDEL', KEYS[5], f[5])
    end
  else
    redis.call('HSET', key, 's', 'queued')
    ready[#ready + 1] = ready_score(f[1], f[2])
    ready[#ready + 1] = member
  end
end
zrem(KEYS[3], expired)
zadd(KEYS[1], ready)
zadd(KEYS[4], dead)
-- 3. the best ready jobs
local out, active = {}, {}
if limit > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], limit)
  for p = 1, #popped, 2 do
    local member = popped[p]
    local key = base .. member
    local f = redis.call('HMGET', key, 't', 'd', 'p', 'r', 'e', 'a', 'x', 'u', 'o', 'g', 'err', 'stk')
    local attempts = tonumber(f[6]) + 1
    redis.call('HSET', key, 's', 'active', 'a', attempts, 'w', ARGV[4], 'l', ARGV[5])
    active[#active + 1] = ARGV[5]
    active[#active + 1] = member
    out[#out + 1] = member
    for k = 1, 12 do out[#out + 1] = f[k] or false end
    out[#out - 6] = attempts
  end
  zadd(KEYS[3], active)
end
-- More left: wake another idle worker (a chain, so one enqueue token never strands a backlog).
if redis.call('ZCARD', KEYS[1]) > 0 and redis.call('LLEN', KEYS[6]) == 0 then
  redis.call('RPUSH', KEYS[6], '1')
end
return out
