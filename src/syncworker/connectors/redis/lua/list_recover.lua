-- redis_list recovery: return the processing lists of dead workers to their source lists.
--
-- A worker is dead when its heartbeat key is gone (or when it is ARGV[2]: a restarted
-- worker reusing its id recovers its previous life's batches before it starts).
-- Everything happens in one script, so two workers recovering at once move each list
-- exactly once.
--
-- KEYS[1] workers set. ARGV[1] worker key prefix (heartbeat key = prefix .. id, registry
-- hash = prefix .. id .. ':batches'), ARGV[2] worker id to recover regardless, or ''.
-- Processing list names end in ':<claim sequence>'; the newest claim goes back first, so
-- the oldest items end up rightmost, where they are consumed first.
-- Returns {worker id, lists, items, ...} for every worker recovered.
-- Keys are derived from the workers set, so this script targets standalone Redis (or a
-- single hash slot), not Redis Cluster.
local CHUNK = 1000
local report = {}
for _, worker in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local heartbeat = ARGV[1] .. worker
  if worker == ARGV[2] or redis.call('EXISTS', heartbeat) == 0 then
    local registry = heartbeat .. ':batches'
    local flat = redis.call('HGETALL', registry)
    local lists = {}
    for j = 1, #flat, 2 do
      local sequence = tonumber(string.match(flat[j], ':(%d+)$')) or 0
      lists[#lists + 1] = {flat[j], flat[j + 1], sequence}
    end
    table.sort(lists, function(a, b) return a[3] > b[3] end)
    local moved = 0
    for _, list in ipairs(lists) do
      local items = redis.call('LRANGE', list[1], 0, -1)
      for first = 1, #items, CHUNK do
        redis.call('RPUSH', list[2], unpack(items, first, math.min(first + CHUNK - 1, #items)))
      end
      moved = moved + #items
      redis.call('DEL', list[1])
    end
    redis.call('DEL', registry)
    redis.call('SREM', KEYS[1], worker)
    report[#report + 1] = worker
    report[#report + 1] = #lists
    report[#report + 1] = moved
  end
end
return report
