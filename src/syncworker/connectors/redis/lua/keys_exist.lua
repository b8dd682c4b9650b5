-- redis sink write: whether each record key exists, in one command (EXISTS with many keys
-- only counts them). Sent inside the batch's MULTI just before the keys are written, so the
-- answer is the state the write replaces: added (0) or updated (1).
--
-- KEYS the record keys. Returns one 0/1 per key, in order.
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('EXISTS', KEYS[i])
end
return out
