-- redis_list claim: move up to ARGV[1] items from the consuming (right) end of several
-- source lists into this claim's processing lists, atomically, and return them.
--
-- KEYS[1] workers set, KEYS[2] this worker's heartbeat key, KEYS[3] this worker's registry
-- hash (processing list -> source list); then, for list i = 1..n:
-- KEYS[2 + 2i] source list, KEYS[3 + 2i] processing list of this claim for that source.
-- ARGV[1] limit, ARGV[2] round-robin offset (which list is served first),
-- ARGV[3] worker id, ARGV[4] heartbeat ttl in ms.
--
-- The limit is shared fairly: each list with items gets an equal share, what a short list
-- leaves goes to the others, and the rotating offset decides who gets the odd items.
-- Returns {i, {items oldest first}, ...} for every list that gave items.
local CHUNK = 1000 -- unpack() is limited by the Lua C stack; push in slices
local n = (#KEYS - 3) / 2
local limit = tonumber(ARGV[1])
local offset = tonumber(ARGV[2]) % n

for i = 1, n do
  if redis.call('HEXISTS', KEYS[3], KEYS[3 + 2 * i]) == 1 then
    return redis.error_reply('ERR processing list ' .. KEYS[3 + 2 * i] .. ' already in use')
  end
end

local available, take = {}, {}
for i = 1, n do
  available[i] = redis.call('LLEN', KEYS[2 + 2 * i])
  take[i] = 0
end

local left = limit
while left > 0 do
  local open = 0
  for i = 1, n do
    if available[i] > take[i] then open = open + 1 end
  end
  if open == 0 then break end
  local share = math.max(1, math.floor(left / open))
  for j = 0, n - 1 do
    local i = (offset + j) % n + 1
    local give = math.min(share, available[i] - take[i], left)
    if give > 0 then
      take[i] = take[i] + give
      left = left - give
    end
  end
end

local out = {}
for i = 1, n do
  if take[i] > 0 then
    local source, processing = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
    -- RPOP with a count returns the oldest item first; LPUSH keeps the source's layout in
    -- the processing list (oldest at the right), which rollback and recovery rely on.
    local items = redis.call('RPOP', source, take[i])
    for first = 1, #items, CHUNK do
      redis.call('LPUSH', processing, unpack(items, first, math.min(first + CHUNK - 1, #items)))
    end
    redis.call('HSET', KEYS[3], processing, source)
    out[#out + 1] = i
    out[#out + 1] = items
  end
end

if #out > 0 then
  redis.call('SADD', KEYS[1], ARGV[3])
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
end
return out
