-- admit.lua: everything the guard asks before a request, in one atomic step.
-- Order (the same as MemoryGuards.admit): kill switch, loop counters, rate limits (GCRA),
-- budget reservations. Rates and budgets are all-or-nothing: nothing is written unless
-- every check passes.
--
-- KEYS  1 ks:s:<session>   2 ks:a:<agent>   3 fp:<fingerprint>:<session>
--       4 st:<session>     5 ch:<chain>     6 ix:st   7 ix:ch
--       8 .. 7+nr          rl:<rate key>        (string: GCRA TAT in µs)
--       then per budget:   bu:<budget key>      (hash: spent, reserved, r:<holder> amount)
--                          bx:<budget key>      (zset: holder -> ms its hold lapses)
-- ARGV  1 retention_s  2 fingerprint window ms (-1: no fingerprint)  3 count steps (0/1)
--       4 count chain hand-offs (0/1)  5 agent  6 session  7 chain  8 max_sessions
--       9 nr  10 nb  11 holder (the request id)  12 hold ms
--       then per rate:   interval_us tolerance_us cost
--       then per budget: limit reserve ttl_s (0: no expiry)
-- Each reservation is held under its request (field r:<holder>), so record.lua releases
-- exactly it, once; one never settled lapses after `hold ms` (swept here, oldest first). A
-- holder already settled or released (field "x": a tombstone) is an admit that arrived
-- after its request gave up on it: it reserves and consumes nothing ('stale').
-- The index zsets bound the step and chain counters to max_sessions entries as
-- MemoryState does (steps: least recently counted dropped; chains: oldest dropped); a
-- counter no longer indexed starts afresh.
-- Returns {allowed, denied_by, index (1-based), retry_after_s, repeats, steps, age_s,
--          rounds, n, remaining_1, reset_1 .. remaining_n, reset_n,
--          m, spent_1, reserved_1 .. spent_m, reserved_m}
-- Floats travel as strings: a Lua number in a reply is truncated to an integer.

local function f(x) return string.format('%.17g', x) end

if redis.call('EXISTS', KEYS[1]) == 1 then return {'0', 'killed'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'0', 'paused'} end

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local now_us = now * 1e6
local retention = tonumber(ARGV[1])

-- loop counters: every request past the kill switch counts, refused or not
local repeats, steps, age, rounds = 0, 0, 0, 0
local fp_window = tonumber(ARGV[2])
if fp_window >= 0 then
  repeats = redis.call('INCR', KEYS[3])
  if repeats == 1 then redis.call('PEXPIRE', KEYS[3], math.max(1, fp_window)) end
end
local max_sessions = tonumber(ARGV[8])
-- index a counter: returns whether it was already known; drops the oldest beyond the bound
local function index(zset, member, move)
  local known = redis.call('ZSCORE', zset, member)
  if known and not move then return true end
  redis.call('ZADD', zset, f(now), member)
  if not known then
    local over = redis.call('ZCARD', zset) - max_sessions
    if over > 0 then redis.call('ZREMRANGEBYRANK', zset, 0, over - 1) end
  end
  redis.call('EXPIRE', zset, retention)
  return known and true or false
end
if ARGV[3] == '1' then
  if not index(KEYS[6], ARGV[6], true) then redis.call('DEL', KEYS[4]) end
  steps = redis.call('HINCRBY', KEYS[4], 'n', 1)
  local first = now
  if steps == 1 then
    redis.call('HSET', KEYS[4], 'first', f(now))
  else
    first = tonumber(redis.call('HGET', KEYS[4], 'first')) or now
  end
  redis.call('EXPIRE', KEYS[4], retention)
  age = now - first
end
if ARGV[4] == '1' then
  local cur = {false, false}
  if index(KEYS[7], ARGV[7], false) then
    cur = redis.call('HMGET', KEYS[5], 'agent', 'rounds')
  end
  if not cur[1] then
    redis.call('HSET', KEYS[5], 'agent', ARGV[5], 'rounds', 0)
  elseif cur[1] ~= ARGV[5] then
    redis.call('HSET', KEYS[5], 'agent', ARGV[5])
    rounds = redis.call('HINCRBY', KEYS[5], 'rounds', 1)
  else
    rounds = tonumber(cur[2]) or 0
  end
  redis.call('EXPIRE', KEYS[5], retention)
end

local nr, nb = tonumber(ARGV[9]), tonumber(ARGV[10])
local out_rates, new_tats = {}, {}

local function reply(allowed, denied_by, index, retry_after, budgets)
  local r = {allowed, denied_by, index, retry_after, repeats, steps, f(age), rounds}
  r[#r + 1] = #out_rates / 2
  for i = 1, #out_rates do r[#r + 1] = out_rates[i] end
  r[#r + 1] = #budgets / 2
  for i = 1, #budgets do r[#r + 1] = budgets[i] end
  return r
end

-- GCRA, computed for every limit before any is applied
for i = 1, nr do
  local a = 12 + (i - 1) * 3
  local interval, tolerance, cost = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
      tonumber(ARGV[a + 3])
  local tat = tonumber(redis.call('GET', KEYS[7 + i])) or now_us
  if tat < now_us then tat = now_us end
  local new_tat = tat + interval * cost
  local allow_at = new_tat - tolerance
  if allow_at > now_us then
    return reply('0', 'rate', i, f((allow_at - now_us) / 1e6), {})
  end
  new_tats[i] = new_tat
  local remaining = (tolerance - (new_tat - now_us)) / interval
  if remaining >= 0 then remaining = math.floor(remaining) else remaining = math.ceil(remaining) end
  out_rates[#out_rates + 1] = f(remaining)
  out_rates[#out_rates + 1] = f((new_tat - now_us) / 1e6)
end

-- budgets: spent + reserved by others + this reservation must fit
local holder, hold_ms = 'r:' .. ARGV[11], tonumber(ARGV[12])
local now_ms = math.floor(now * 1000)
-- release the holds that lapsed (requests that never settled), a few at a time
local function lapse(bu, bx)
  local gone = redis.call('ZRANGEBYSCORE', bx, '-inf', now_ms, 'LIMIT', 0, 32)
  if #gone == 0 then return end
  local freed = 0
  for i = 1, #gone do
    freed = freed + (tonumber(redis.call('HGET', bu, 'r:' .. gone[i])) or 0)
    redis.call('HDEL', bu, 'r:' .. gone[i])
  end
  redis.call('ZREM', bx, unpack(gone))
  local reserved = (tonumber(redis.call('HGET', bu, 'reserved')) or 0) - freed
  if reserved < 1e-12 then reserved = 0 end
  redis.call('HSET', bu, 'reserved', f(reserved))
end
local out_budgets = {}
local ba = 12 + nr * 3
for j = 1, nb do
  local a = ba + (j - 1) * 3
  local limit, reserve = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local bu, bx = KEYS[6 + nr + 2 * j], KEYS[7 + nr + 2 * j]
  lapse(bu, bx)
  local cur = redis.call('HMGET', bu, 'spent', 'reserved', holder)
  if cur[3] then return reply('0', 'stale', j, '0', {}) end
  local spent, reserved = tonumber(cur[1]) or 0, tonumber(cur[2]) or 0
  out_budgets[#out_budgets + 1] = f(spent)
  out_budgets[#out_budgets + 1] = f(reserved)
  if spent + reserved + reserve > limit + 1e-12 then
    return reply('0', 'budget', j, '0', out_budgets)
  end
end

-- every check passed: apply
for i = 1, nr do
  local ms = math.floor((new_tats[i] - now_us) / 1000) + 1000
  redis.call('SET', KEYS[7 + i], f(new_tats[i]), 'PX', ms)
end
for j = 1, nb do
  local a = ba + (j - 1) * 3
  local reserve, ttl = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local bu, bx = KEYS[6 + nr + 2 * j], KEYS[7 + nr + 2 * j]
  local cur = redis.call('HMGET', bu, 'spent', 'reserved')
  redis.call('HSET', bu, 'spent', f(tonumber(cur[1]) or 0),
             'reserved', f((tonumber(cur[2]) or 0) + reserve), holder, f(reserve))
  redis.call('ZADD', bx, now_ms + hold_ms, ARGV[11])
  if ttl > 0 then
    redis.call('EXPIRE', bu, ttl, 'NX')
    redis.call('EXPIRE', bx, ttl, 'NX')
  end
end
return reply('1', '', 0, '0', out_budgets)
