-- Reads one topic for a sync and marks the instant of the read on the news channel, in one
-- atomic step (src/redis_log/store.rs): on the subscription, the topic's notices before the
-- mark are in this read and those after it are not (src/redis_log/timeline.rs).
--
-- KEYS[1] the topic's meta hash, KEYS[2] its log stream.
-- ARGV[1] the news channel, ARGV[2] the mark ("=SYNC TOPIC\n").
-- Returns nil if the topic is gone, else {epoch, seq, entries oldest first}.
redis.call('PUBLISH', ARGV[1], ARGV[2])
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if not meta[1] then
  return false
end
return {meta[1], meta[2] or '0', redis.call('XRANGE', KEYS[2], '-', '+')}
