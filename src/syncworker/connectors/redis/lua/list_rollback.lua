-- redis_list rollback (nack): put a batch back at the consuming end of its source lists, in
-- its original order, so the oldest item is popped first again; then forget the batch.
--
-- KEYS[1] the worker's registry hash; then pairs KEYS[2i], KEYS[2i + 1]: processing list,
-- source list. Returns the number of items put back.
local CHUNK = 1000
local moved = 0
for i = 2, #KEYS, 2 do
  local processing, source = KEYS[i], KEYS[i + 1]
  -- The processing list holds the newest item at the left and the oldest at the right;
  -- RPUSH in that order leaves the oldest item rightmost, at the consuming end.
  local items = redis.call('LRANGE', processing, 0, -1)
  for first = 1, #items, CHUNK do
    redis.call('RPUSH', source, unpack(items, first, math.min(first + CHUNK - 1, #items)))
  end
  moved = moved + #items
  redis.call('DEL', processing)
  redis.call('HDEL', KEYS[1], processing)
end
return moved
