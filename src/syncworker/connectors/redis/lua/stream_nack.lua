-- redis_stream rollback (nack): keep a batch's entries pending for this consumer with their
-- idle time reset, so no other consumer reclaims them before this one delivers them again.
--
-- KEYS[1] stream. ARGV[1] group, ARGV[2] the consumer the batch was delivered to,
-- ARGV[3] this source's consumer now, ARGV[4..] entry ids.
-- Entries another consumer has reclaimed meanwhile are left to it. XCLAIM ... JUSTID does not
-- count a delivery: a rollback is not a failed delivery, so it never leads to dead-lettering.
-- Returns the ids kept for redelivery.
local kept = {}
for i = 4, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[i], 'JUSTID')
    kept[#kept + 1] = ARGV[i]
  end
end
return kept
