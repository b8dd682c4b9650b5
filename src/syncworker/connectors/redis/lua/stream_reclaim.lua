-- redis_stream reclaim: take over entries other consumers were delivered but did not
-- acknowledge within the idle time (they died or stalled), or, at start-up, the entries this
-- consumer name still holds from a previous life; dead-letter the entries that were delivered
-- too often.
--
-- KEYS[1] stream, KEYS[2] dead-letter stream.
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] min idle ms, ARGV[4] cursor ('-' to start, or
-- '(<id>' to continue after <id>), ARGV[5] limit, ARGV[6] max deliveries,
-- ARGV[7] 'others' (idle entries of other consumers) or 'own' (every entry of ARGV[2]),
-- ARGV[8] how many pending entries to look at.
--
-- An entry already delivered max-deliveries times is not delivered again: it is added to the
-- dead-letter stream with its original fields plus dead_reason, dead_deliveries, dead_id,
-- dead_group and dead_consumer, then acknowledged.
-- Returns {next cursor ('-' when the sweep is complete), dead-lettered count,
-- {{id, {field, value, ...}, deliveries}, ...}}.
local stream, dead = KEYS[1], KEYS[2]
local group, me = ARGV[1], ARGV[2]
local limit, max_deliveries = tonumber(ARGV[5]), tonumber(ARGV[6])
local own, scan = ARGV[7] == 'own', tonumber(ARGV[8])

local pending, idle
if own then
  idle = 0
  pending = redis.call('XPENDING', stream, group, ARGV[4], '+', scan, me)
else
  idle = ARGV[3]
  pending = redis.call('XPENDING', stream, group, 'IDLE', idle, ARGV[4], '+', scan)
end
local claimed, dead_count = {}, 0
local next_cursor = '-'
if #pending == scan then next_cursor = '(' .. pending[#pending][1] end

for k, item in ipairs(pending) do
  if #claimed >= limit then
    next_cursor = '(' .. pending[k - 1][1]
    break
  end
  local id, owner, deliveries = item[1], item[2], item[4]
  if own or owner ~= me then
    if deliveries >= max_deliveries then
      local entry = redis.call('XRANGE', stream, id, id)
      if #entry > 0 then
        local args = entry[1][2]
        local extra = {'dead_reason', 'max_deliveries exceeded', 'dead_deliveries', deliveries,
          'dead_id', id, 'dead_group', group, 'dead_consumer', owner}
        for _, value in ipairs(extra) do args[#args + 1] = value end
        redis.call('XADD', dead, '*', unpack(args))
      end
      redis.call('XACK', stream, group, id)
      dead_count = dead_count + 1
    else
      -- XCLAIM re-checks the idle time and counts a delivery; an entry deleted from the
      -- stream meanwhile is dropped from the pending list and not returned.
      local entries = redis.call('XCLAIM', stream, group, me, idle, id)
      local entry = entries[1]
      if entry and entry[2] then
        claimed[#claimed + 1] = {entry[1], entry[2], deliveries + 1}
      end
    end
  end
end
return {next_cursor, dead_count, claimed}
