-- admit.lua: everything the guard asks before a request, in one atomic step.
-- Order (the same as MemoryGuards.admit): the run (lineage), kill switch, loop counters,
-- rate limits (GCRA), budget reservations. Rates and budgets are all-or-nothing: nothing
-- is written unless every check passes.
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
--       then per budget: limit reserve ttl_s (0: no expiry) session-scoped (0/1)
--       then the lineage query: asked (0/1) and, when asked: key prefix, seed, window_s,
--       named, parent, response, opening, request fingerprint ('' for none), na, answer
--       keys.., nh, prints..
-- Lineage (state/lineage.py has the rules; MemoryLineage the same code): the session is
-- resolved first, and every session-keyed key (kill switch, fingerprint and step counters,
-- the chain, a session budget) is then built here from the prefix for the resolved session.
-- They share the prefix's hash tag, so on a Redis Cluster they live in this slot too.
--   la:<answer key> "agent\nsession"   lf:<fingerprint> session   rp:<response id> session
--   op:<agent>:<opening> hash s, n     pg:<session> (progressed)    rt:<session> root
--   kd:<parent> set of children
-- Each reservation is held under its request (field r:<holder>), so record.lua releases
-- exactly it, once; one never settled lapses after `hold ms` (swept here, oldest first). A
-- holder already settled or released (field "x": a tombstone) is an admit that arrived
-- after its request gave up on it: it reserves and consumes nothing ('stale').
-- The index zsets bound the step and chain counters to max_sessions entries as
-- MemoryState does (steps: least recently counted dropped; chains: oldest dropped); a
-- counter no longer indexed starts afresh.
-- Returns {allowed, denied_by, index (1-based), retry_after_s, repeats, steps, age_s,
--          rounds, n, remaining_1, reset_1 .. remaining_n, reset_n,
--          m, spent_1, reserved_1 .. spent_m, reserved_m,
--          session, parent, root, how}   (the last four: the lineage, '' when not asked)
-- Floats travel as strings: a Lua number in a reply is truncated to an integer.

local function f(x) return string.format('%.17g', x) end

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local now_us = now * 1e6
local retention = tonumber(ARGV[1])
local nr, nb = tonumber(ARGV[9]), tonumber(ARGV[10])

-- the run: resolve the session, then aim every session-keyed key at it
local k_kill, k_fp, k_steps, k_chain = KEYS[1], KEYS[3], KEYS[4], KEYS[5]
local chain_name, session_name = ARGV[7], ARGV[6]
local budget_keys = {}
for j = 1, nb do budget_keys[j] = {KEYS[6 + nr + 2 * j], KEYS[7 + nr + 2 * j]} end
local lin = {'', '', '', ''}
local la = 13 + nr * 3 + nb * 4
if ARGV[la] == '1' then
  local P, seed, window = ARGV[la + 1], ARGV[la + 2], math.max(1, math.floor(tonumber(ARGV[la + 3])))
  local named, parent, response, opening = ARGV[la + 4], ARGV[la + 5], ARGV[la + 6], ARGV[la + 7]
  local agent = ARGV[5]
  local request_fp = ARGV[la + 8]
  local na = tonumber(ARGV[la + 9])
  local hi = la + 10 + na
  local nh = tonumber(ARGV[hi])
  if parent == '' then parent = nil end
  local session, how
  if named ~= '' then
    session, how = named, 'header'
  elseif response ~= '' and redis.call('EXISTS', P .. 'rp:' .. response) == 1 then
    session, how = redis.call('GET', P .. 'rp:' .. response), 'response'
    redis.call('SET', P .. 'pg:' .. session, '1', 'EX', window)
  elseif na > 0 then
    local found
    for i = 1, na do
      found = redis.call('GET', P .. 'la:' .. ARGV[la + 9 + i])
      if found then break end
    end
    local sep = found and string.find(found, '\n', 1, true)
    if sep and string.sub(found, 1, sep - 1) == agent then
      session, how = string.sub(found, sep + 1), 'continued'
      redis.call('SET', P .. 'pg:' .. session, '1', 'EX', window)
    else
      session, how = seed, 'unknown'
      if sep and not parent then parent = string.sub(found, sep + 1) end
    end
  elseif opening ~= '' then
    local k = P .. 'op:' .. agent .. ':' .. opening
    local cur = redis.call('HMGET', k, 's', 'n')
    if not cur[1] then
      session, how = seed, 'opened'
      redis.call('HSET', k, 's', session, 'n', 1)
    elseif redis.call('EXISTS', P .. 'pg:' .. cur[1]) == 0 then
      session, how = cur[1], 'repeated'
    else
      local n = (tonumber(cur[2]) or 1) + 1
      session, how = seed .. '-' .. n, 'restarted'
      redis.call('HSET', k, 's', session, 'n', n)
    end
    redis.call('EXPIRE', k, window)
  else
    session, how = seed, 'unknown'
  end
  if not parent then
    for i = 1, nh do
      local said = redis.call('GET', P .. 'lf:' .. ARGV[hi + i])
      if said and said ~= '*' then
        local nl = string.find(said, '\n', 1, true)
        local a, b = said, nil
        if nl then a, b = string.sub(said, 1, nl - 1), string.sub(said, nl + 1) end
        if a ~= session then parent = a elseif b then parent = b end
        if parent then break end
      end
    end
  end
  local root = redis.call('GET', P .. 'rt:' .. session)
  if not root then
    root = parent and (redis.call('GET', P .. 'rt:' .. parent) or parent) or session
    redis.call('SET', P .. 'rt:' .. session, root, 'EX', window)
  end
  if parent then
    redis.call('SADD', P .. 'kd:' .. parent, session)
    redis.call('EXPIRE', P .. 'kd:' .. parent, retention)
  end
  lin = {session, parent or '', root, how}
  k_kill = P .. 'ks:s:' .. session
  k_fp = P .. 'fp:' .. request_fp .. ':' .. session
  k_steps = P .. 'st:' .. session
  if ARGV[4] == '1' then chain_name = root; k_chain = P .. 'ch:' .. root end
  for j = 1, nb do
    if ARGV[12 + nr * 3 + (j - 1) * 4 + 4] == '1' then
      local bk = 'session:' .. session .. ':all'
      budget_keys[j] = {P .. 'bu:' .. bk, P .. 'bx:' .. bk}
    end
  end
  session_name = session
end

local function with_lineage(r)
  for i = 1, 4 do r[#r + 1] = lin[i] end
  return r
end

if redis.call('EXISTS', k_kill) == 1 then return with_lineage({'0', 'killed'}) end
if redis.call('EXISTS', KEYS[2]) == 1 then return with_lineage({'0', 'paused'}) end

-- loop counters: every request past the kill switch counts, refused or not
local repeats, steps, age, rounds = 0, 0, 0, 0
local fp_window = tonumber(ARGV[2])
if fp_window >= 0 then
  repeats = redis.call('INCR', k_fp)
  if repeats == 1 then redis.call('PEXPIRE', k_fp, math.max(1, fp_window)) end
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
  if not index(KEYS[6], session_name, true) then redis.call('DEL', k_steps) end
  steps = redis.call('HINCRBY', k_steps, 'n', 1)
  local first = now
  if steps == 1 then
    redis.call('HSET', k_steps, 'first', f(now))
  else
    first = tonumber(redis.call('HGET', k_steps, 'first')) or now
  end
  redis.call('EXPIRE', k_steps, retention)
  age = now - first
end
if ARGV[4] == '1' then
  local cur = {false, false}
  if index(KEYS[7], chain_name, false) then
    cur = redis.call('HMGET', k_chain, 'agent', 'rounds')
  end
  if not cur[1] then
    redis.call('HSET', k_chain, 'agent', ARGV[5], 'rounds', 0)
  elseif cur[1] ~= ARGV[5] then
    redis.call('HSET', k_chain, 'agent', ARGV[5])
    rounds = redis.call('HINCRBY', k_chain, 'rounds', 1)
  else
    rounds = tonumber(cur[2]) or 0
  end
  redis.call('EXPIRE', k_chain, retention)
end

local out_rates, new_tats = {}, {}

local function reply(allowed, denied_by, index, retry_after, budgets)
  local r = {allowed, denied_by, index, retry_after, repeats, steps, f(age), rounds}
  r[#r + 1] = #out_rates / 2
  for i = 1, #out_rates do r[#r + 1] = out_rates[i] end
  r[#r + 1] = #budgets / 2
  for i = 1, #budgets do r[#r + 1] = budgets[i] end
  return with_lineage(r)
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
local out_budgets, read = {}, {}
local ba = 12 + nr * 3
for j = 1, nb do
  local a = ba + (j - 1) * 4
  local limit, reserve = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local bu, bx = budget_keys[j][1], budget_keys[j][2]
  lapse(bu, bx)
  local cur = redis.call('HMGET', bu, 'spent', 'reserved', holder)
  if cur[3] then return reply('0', 'stale', j, '0', {}) end
  read[j] = cur  -- applied below from what was read here (nothing runs in between)
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
  local a = ba + (j - 1) * 4
  local reserve, ttl = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local bu, bx = budget_keys[j][1], budget_keys[j][2]
  local cur = read[j]
  redis.call('HSET', bu, 'spent', f(tonumber(cur[1]) or 0),
             'reserved', f((tonumber(cur[2]) or 0) + reserve), holder, f(reserve))
  redis.call('ZADD', bx, now_ms + hold_ms, ARGV[11])
  if ttl > 0 then
    -- a budget hash that existed has its period's expiry (set when it was made); the
    -- holders' zset may have emptied (and gone) since: NX sets it only when it has none
    if not cur[1] and not cur[2] then redis.call('EXPIRE', bu, ttl, 'NX') end
    redis.call('EXPIRE', bx, ttl, 'NX')
  end
end
return reply('1', '', 0, '0', out_budgets)
