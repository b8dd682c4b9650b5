-- Enqueue jobs of one queue; with a cron name, only when the slot is later than the last one.
-- KEYS: 1 ready, 2 delayed, 3 unique, 4 wake, 5 seq, 6 cron
-- ARGV: 1 job key prefix, 2 now (epoch s), 3 cron name ('' = no cron), 4 cron slot,
--       5 wake token cap, then 7 per job: task, data, priority, max_attempts, run_at,
--       unique key ('' = none), timeout_s ('' = none)
-- Returns the members (ids without the queue) in order, or false when the cron slot is taken.
local base, now = ARGV[1], tonumber(ARGV[2])
if ARGV[3] ~= '' then
  local last = redis.call('HGET', KEYS[6], ARGV[3])
  if last and tonumber(last) >= tonumber(ARGV[4]) then return false end
  redis.call('HSET', KEYS[6], ARGV[3], ARGV[4])
end
local count = (#ARGV - 5) / 7
local next_n = redis.call('INCRBY', KEYS[5], count) - count
local out, ready, delayed = {}, {}, {}
local added = 0
for j = 0, count - 1 do
  local i = 6 + j * 7
  local unique = ARGV[i + 5]
  local held = false
  if unique ~= '' then held = redis.call('HGET', KEYS[3], unique) end
  if held then
    out[#out + 1] = held
  else
    next_n = next_n + 1
    local member = string.format('%016d', next_n)
    local run_at = tonumber(ARGV[i + 4])
    local state = 'queued'
    if run_at > now then state = 'delayed' end
    local key = base .. member
    redis.call('HSET', key, 't', ARGV[i], 'd', ARGV[i + 1], 'p', ARGV[i + 2], 'x', ARGV[i + 3],
      'r', ARGV[i + 4], 'e', ARGV[2], 'a', 0, 's', state)
    if unique ~= '' then
      redis.call('HSET', key, 'u', unique)
      redis.call('HSET', KEYS[3], unique, member)
    end
    if ARGV[i + 6] ~= '' then redis.call('HSET', key, 'o', ARGV[i + 6]) end
    if state == 'delayed' then
      delayed[#delayed + 1] = run_at
      delayed[#delayed + 1] = member
    else
      local ms = math.min(math.max(math.floor(run_at * 1000), 0), 4398046511103)
      ready[#ready + 1] = (1000 - tonumber(ARGV[i + 2])) * 4398046511104 + ms
      ready[#ready + 1] = member
    end
    out[#out + 1] = member
    added = added + 1
  end
end
-- unpack in slices: Lua's C stack takes about 8000 values
local function zadd(key, pairs)
  for s = 1, #pairs, 4000 do
    redis.call('ZADD', key, unpack(pairs, s, math.min(s + 3999, #pairs)))
  end
end
zadd(KEYS[1], ready)
zadd(KEYS[2], delayed)
if added > 0 then
  local cap = tonumber(ARGV[5])
  local tokens = {}
  for t = 1, math.min(added, cap) do tokens[t] = '1' end
  redis.call('RPUSH', KEYS[4], unpack(tokens))
  redis.call('LTRIM', KEYS[4], -cap, -1)
end
return out
