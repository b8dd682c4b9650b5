-- redis sink finish_group: a group's full read is complete; remove what it did not deliver.
--
-- KEYS[1] the group's index set (record ids), KEYS[2] its meta hash, KEYS[3] the read's
-- staging set (ids written by this read), KEYS[4] the group's live zset (ids written outside
-- a full read, scored by the write time in ms), KEYS[5] the read's start marker (the time in
-- ms of its first write). An id written outside the read after it started is kept: a change
-- delivered during the read (a record created after its page was read) is no record gone.
-- With hash tags every key, the record keys included, is in one slot.
-- ARGV[1] the read's run tag, ARGV[2] and ARGV[3] the record key before and after its id,
-- ARGV[4] the records the read delivered, ARGV[5] the source's content hash, ARGV[6] the sync
-- time (ISO UTC), ARGV[7] the source's modified time ('' when unknown).
--
-- Returns {removed, held, state}: state 0 finished now, 1 finished before (the same run:
-- nothing done, idempotent), 2 the staging set is missing although the read delivered
-- records (expired or lost: nothing is removed, the meta hash is left alone).
if redis.call('HGET', KEYS[2], 'last_run') == ARGV[1] then
  return {0, redis.call('SCARD', KEYS[1]), 1}
end
if tonumber(ARGV[4]) > 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  return {0, redis.call('SCARD', KEYS[1]), 2}
end
local kept = {}
local started = redis.call('GET', KEYS[5])
if started then -- a read of no records wrote no marker: it keeps nothing it did not deliver
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], started, '+inf')) do
    kept[id] = true
  end
end
local gone = {}
for _, id in ipairs(redis.call('SDIFF', KEYS[1], KEYS[3])) do
  if not kept[id] then
    gone[#gone + 1] = id
  end
end
local step = 500
for first = 1, #gone, step do
  local last = math.min(first + step - 1, #gone)
  local keys = {}
  for i = first, last do
    keys[#keys + 1] = ARGV[2] .. gone[i] .. ARGV[3]
  end
  redis.call('DEL', unpack(keys))
  redis.call('SREM', KEYS[1], unpack(gone, first, last))
end
local held = redis.call('SCARD', KEYS[1])
redis.call('HSET', KEYS[2], 'count', held, 'content_hash', ARGV[5], 'last_synced_at', ARGV[6],
  'source_count', ARGV[4], 'removed', #gone, 'last_run', ARGV[1])
if ARGV[7] == '' then
  redis.call('HDEL', KEYS[2], 'source_modified_time')
else
  redis.call('HSET', KEYS[2], 'source_modified_time', ARGV[7])
end
-- Writes before now are older than the next read's start: the live zset starts again.
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
return {#gone, held, 0}
