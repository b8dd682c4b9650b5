-- redis_list ack: forget a batch by deleting its processing lists.
--
-- KEYS[1] the worker's registry hash, KEYS[2..] the batch's processing lists.
-- Returns how many processing lists still existed (fewer than given means another worker's
-- recovery already returned them to their source: their items will be delivered again).
local found = 0
for i = 2, #KEYS do
  found = found + redis.call('UNLINK', KEYS[i])
  redis.call('HDEL', KEYS[1], KEYS[i])
end
return found
