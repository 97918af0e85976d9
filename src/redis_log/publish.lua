-- Appends messages to one topic's log: tether's only write (src/redis_log/store.rs). Atomic, as
-- every script is, so a topic's seqs and its notices on the news channel are in one order. One
-- call takes every message of a pipeline for that topic, in the order they were published: the
-- cost of running a script is paid once per topic and pipeline, not once per message.
--
-- KEYS[1] the topic's meta hash (epoch, seq), KEYS[2] its log stream.
-- ARGV[1] a fresh random epoch, taken only if the topic has none: a new topic, or one whose keys
--         expired. Its new life must never reuse an old epoch, so that old cursors are reset
--         instead of misread; the caller makes a new candidate for every call.
-- ARGV[2] the stream's cap (--topic-capacity, give or take one stream node).
-- ARGV[3] the keys' time to live in ms (--topic-idle-timeout, renewed by every append).
-- ARGV[4] the news channel, ARGV[5] the topic's name, ARGV[6] and on: the data of each message.
-- Returns {epoch, seq of the first message}; the others follow it, one apart.
local count = #ARGV - 5
if count < 1 then
  return redis.error_reply('ERR no message to append')
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  -- A log left over from an earlier life would refuse ids from 1 again.
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local last = redis.call('HINCRBY', KEYS[1], 'seq', count)
local first = last - count + 1
for i = 1, count do
  -- '%d', not tostring: Lua prints a number of 15 digits or more with an exponent.
  local id = string.format('%d', first + i - 1)
  local data = ARGV[5 + i]
  redis.call('XADD', KEYS[2], id .. '-0', 'd', data)
  -- The notice: "TOPIC EPOCH SEQ\n" then the data as is (src/redis_log/notice.rs).
  redis.call('PUBLISH', ARGV[4], ARGV[5] .. ' ' .. epoch .. ' ' .. id .. '\n' .. data)
end
-- '~': Redis trims whole stream nodes only, so it may keep up to one node (at most
-- stream-node-max-bytes, 4 KB by default) beyond the cap; that cost a fifth less CPU per
-- append than trimming to the entry when each XADD trimmed (docs/scale-out.md). A sync keeps
-- only the newest `cap`.
redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {epoch, first}
