-- redis_stream read: deliver up to ARGV[3] new entries (XREADGROUP ... >) from several streams
-- to one consumer, in one round trip, sharing the limit fairly between the streams.
--
-- KEYS[1..n] stream keys. ARGV[1] group, ARGV[2] consumer, ARGV[3] limit,
-- ARGV[4] round-robin offset (which stream is served first).
-- Each stream first gets an equal share; what a short stream leaves goes to the others.
-- Returns {i, {{id, {field, value, ...}}, ...}, ...} for every stream that gave entries.
local n = #KEYS
local left = tonumber(ARGV[3])
local offset = tonumber(ARGV[4]) % n
local exhausted, got = {}, {}
for i = 1, n do got[i] = {} end

while left > 0 do
  local open = 0
  for i = 1, n do
    if not exhausted[i] then open = open + 1 end
  end
  if open == 0 then break end
  local share = math.max(1, math.floor(left / open))
  for j = 0, n - 1 do
    local i = (offset + j) % n + 1
    if left > 0 and not exhausted[i] then
      local want = math.min(share, left)
      local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want,
        'STREAMS', KEYS[i], '>')
      local entries = reply and reply[1][2] or {}
      for _, entry in ipairs(entries) do
        got[i][#got[i] + 1] = entry
      end
      left = left - #entries
      if #entries < want then exhausted[i] = true end
    end
  end
end

local out = {}
for i = 1, n do
  if #got[i] > 0 then
    out[#out + 1] = i
    out[#out + 1] = got[i]
  end
end
return out
