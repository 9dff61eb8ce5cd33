-- record.lua: everything after a request, in one atomic step: settle the budget
-- reservations, correct the token buckets by the real usage, attribute the step's spend
-- to every dimension for its hour, and append it to its session.
--
-- KEYS  1 sessions (zset: session -> last activity)   2 unobserved (zset, same scores)
--       3 sp:hours (zset of hours that have spend)    4 se:<session> (hash: summary)
--       5 sl:<session> (list of step JSON)
--       6 sp:agent:<h>  7 sp:team:<h>  8 sp:model:<h>  9 sp:provider:<h>  10 sp:tag:<h>
--       11 .. 10+nb     bu:<budget key>
--       11+nb .. 10+nb+nr  rl:<rate key>
-- ARGV  1 session  2 now (client clock, when record() was called)  3 retention_hours
--       4 session_steps  5 max_sessions  6 hour  7 step JSON  8 agent  9 team  10 model
--       11 provider  12 step time  13 input  14 output  15 cached  16 cache_write  17 cost
--       18 ntags, tags.., nb, (reserve actual ttl_s)*nb, nr, (delta_us)*nr
-- Returns the sessions dropped to keep max_sessions (the caller unlinks their keys).
-- Floats are added here as doubles and stored with 17 digits, not with HINCRBYFLOAT (long
-- double), so every sum is bit-identical to the in-process backend.

local function f(x) return string.format('%.17g', x) end
local function addf(key, field, x)
  local cur = tonumber(redis.call('HGET', key, field)) or 0
  redis.call('HSET', key, field, f(cur + x))
end

local sid, now = ARGV[1], tonumber(ARGV[2])
local retention_h = tonumber(ARGV[3])
local retention_s = retention_h * 3600
local hour = tonumber(ARGV[6])
local input, output, cached, cache_write = ARGV[13], ARGV[14], ARGV[15], ARGV[16]
local cost = tonumber(ARGV[17])
local ntags = tonumber(ARGV[18])
local a = 18 + ntags
local nb = tonumber(ARGV[a + 1])
local nr = tonumber(ARGV[a + 2 + nb * 3])

-- settle budgets: release this request's reservation, add what it really cost
for j = 1, nb do
  local b = a + 1 + (j - 1) * 3
  local reserve, actual, ttl = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]),
      tonumber(ARGV[b + 3])
  local k = KEYS[10 + j]
  local cur = redis.call('HMGET', k, 'spent', 'reserved')
  local reserved = (tonumber(cur[2]) or 0) - reserve
  if reserved < 0 then reserved = 0 end
  redis.call('HSET', k, 'spent', f((tonumber(cur[1]) or 0) + actual), 'reserved', f(reserved))
  if ttl > 0 then redis.call('EXPIRE', k, ttl, 'NX') end
end

-- token buckets: move the TAT by (real - estimated) tokens; a bucket that already drained
-- (its key expired) has nothing to correct
if nr > 0 then
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1e6 + tonumber(t[2])
  local r = a + 2 + nb * 3
  for i = 1, nr do
    local k = KEYS[10 + nb + i]
    local tat = tonumber(redis.call('GET', k))
    if tat then
      tat = tat + tonumber(ARGV[r + i])
      redis.call('SET', k, f(tat), 'PX', math.max(0, math.floor((tat - now_us) / 1000)) + 1000)
    end
  end
end

-- hourly spend per dimension (the session dimension is the session summary)
local function attribute(k, key)
  redis.call('HINCRBY', k, key .. '|requests', 1)
  redis.call('HINCRBY', k, key .. '|input', input)
  redis.call('HINCRBY', k, key .. '|output', output)
  redis.call('HINCRBY', k, key .. '|cached', cached)
  redis.call('HINCRBY', k, key .. '|cache_write', cache_write)
  addf(k, key .. '|cost', cost)
end
local expire_at = (hour + retention_h + 1) * 3600
attribute(KEYS[6], ARGV[8])
attribute(KEYS[7], ARGV[9])
attribute(KEYS[8], ARGV[10])
attribute(KEYS[9], ARGV[11])
for i = 1, ntags do attribute(KEYS[10], ARGV[18 + i]) end
for i = 6, 10 do redis.call('EXPIREAT', KEYS[i], expire_at) end
redis.call('ZADD', KEYS[3], hour, hour)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (hour - retention_h))
redis.call('EXPIRE', KEYS[3], retention_s + 3600)

-- the session: a session that is not listed (new, dropped or expired) starts afresh
local new = not redis.call('ZSCORE', KEYS[1], sid) or redis.call('EXISTS', KEYS[4]) == 0
local last
if new then
  redis.call('DEL', KEYS[4], KEYS[5])
  redis.call('HSET', KEYS[4], 'agent', ARGV[8], 'team', ARGV[9], 'first', ARGV[12],
             'steps', 0, 'requests', 0, 'input', 0, 'output', 0, 'cached', 0,
             'cache_write', 0, 'cost', '0')
  last = tonumber(ARGV[12])
else
  last = tonumber(redis.call('HGET', KEYS[4], 'last')) or tonumber(ARGV[12])
end
if now > last then last = now end
redis.call('HSET', KEYS[4], 'last', f(last))
redis.call('HINCRBY', KEYS[4], 'steps', 1)
redis.call('HINCRBY', KEYS[4], 'requests', 1)
redis.call('HINCRBY', KEYS[4], 'input', input)
redis.call('HINCRBY', KEYS[4], 'output', output)
redis.call('HINCRBY', KEYS[4], 'cached', cached)
redis.call('HINCRBY', KEYS[4], 'cache_write', cache_write)
addf(KEYS[4], 'cost', cost)
redis.call('RPUSH', KEYS[5], ARGV[7])
redis.call('LTRIM', KEYS[5], -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', KEYS[4], retention_s)
redis.call('EXPIRE', KEYS[5], retention_s)

redis.call('ZADD', KEYS[1], f(last), sid)
if new then
  redis.call('ZADD', KEYS[2], f(last), sid)
else
  redis.call('ZADD', KEYS[2], 'XX', f(last), sid)
end
-- sessions past retention have lost their keys: forget them
local horizon = '(' .. f(now - retention_s)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', horizon)
-- keep max_sessions, dropping the least recently active
local dropped = {}
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
if over > 0 then
  dropped = redis.call('ZRANGE', KEYS[1], 0, over - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
  for i = 1, #dropped do redis.call('ZREM', KEYS[2], dropped[i]) end
end
redis.call('EXPIRE', KEYS[1], retention_s)
redis.call('EXPIRE', KEYS[2], retention_s)
return dropped
