-- idle.lua: hand out sessions quiet since before the cutoff, each exactly once across
-- every gateway process (ZRANGEBYSCORE + ZREM in one atomic step).
-- KEYS 1 unobserved (zset: session -> last activity)
-- ARGV 1 cutoff (epoch seconds, exclusive)  2 limit
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for i = 1, #ids do redis.call('ZREM', KEYS[1], ids[i]) end
return ids
