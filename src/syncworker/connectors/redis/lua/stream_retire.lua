-- redis_stream close: remove this source's consumers from the group when they hold no pending
-- entries, so short-lived consumer names (host:pid:random) do not pile up in XINFO CONSUMERS.
-- A consumer with pending entries stays: other consumers reclaim those after the idle time.
--
-- KEYS[1..n] streams. ARGV[1] group, ARGV[2..] consumer names.
-- Returns the number of (stream, consumer) pairs removed.
local removed = 0
for _, stream in ipairs(KEYS) do
  for i = 2, #ARGV do
    local ok, pending = pcall(redis.call, 'XPENDING', stream, ARGV[1], '-', '+', 1, ARGV[i])
    if ok and #pending == 0 then
      redis.call('XGROUP', 'DELCONSUMER', stream, ARGV[1], ARGV[i])
      removed = removed + 1
    end
  end
end
return removed
