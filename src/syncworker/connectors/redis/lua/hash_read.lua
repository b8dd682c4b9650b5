-- redis group side: the fields of many hashes in one call (HGETALL has no multi-key form).
--
-- KEYS the record keys. Returns one flat {field, value, ...} array per key, empty for a key
-- that is missing or not a hash (not a row of the side).
local out = {}
for i = 1, #KEYS do
  if redis.call('TYPE', KEYS[i]).ok == 'hash' then
    out[i] = redis.call('HGETALL', KEYS[i])
  else
    out[i] = {}
  end
end
return out
