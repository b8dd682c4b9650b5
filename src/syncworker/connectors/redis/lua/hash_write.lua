-- redis sink write, format hash: replace each record's hash (DEL then HSET, so a field the
-- record no longer has goes), in one command inside the batch's MULTI.
--
-- KEYS the record keys. ARGV, for each key in order: its number of fields n, then n field
-- names and n values. Returns one 0/1 per key: whether it existed (updated) or not (added).
local out = {}
local at = 1
local step = 200 -- field pairs per HSET: unpack's stack stays small for a wide record
for i = 1, #KEYS do
  local n = tonumber(ARGV[at])
  out[i] = redis.call('DEL', KEYS[i])
  for first = 1, n, step do
    local args = {}
    for j = first, math.min(first + step - 1, n) do
      args[#args + 1] = ARGV[at + j]
      args[#args + 1] = ARGV[at + n + j]
    end
    redis.call('HSET', KEYS[i], unpack(args))
  end
  at = at + 2 * n + 1
end
return out
