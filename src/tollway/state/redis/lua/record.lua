-- record.lua: everything after a request, in one atomic step: settle the budget
-- reservations, correct the token buckets by the real usage, count each attempt's outcome
-- on its target's circuit breaker, attribute the step's spend to every dimension for its
-- hour, and append it to its session. Without a step (has_step 0) only the settlement.
--
-- KEYS  1 br:all (set of breaker targets)  2 dn:<record id> (applied once: the marker)
--       then per budget  bu:<budget key> bx:<budget key>
--       then nr  rl:<rate key>
--       then nbr br:<target>                          (one per outcome, in order)
--       then, with a step: sessions (zset: session -> last activity), unobserved (zset,
--       same scores), sp:hours (zset of hours that have spend), se:<session> (hash:
--       summary), sl:<session> (list of step JSON), sp:agent:<h>, sp:team:<h>,
--       sp:model:<h>, sp:provider:<h>, sp:tag:<h>
-- ARGV  1 now (client clock, when record() was called)  2 nb  3 nr  4 nbr  5 has_step
--       6 record id ('' : not deduplicated)  7 dedupe_s (how long the marker lives)
--       then what the answer leaves for lineage: asked (0/1) and, when asked: key prefix,
--       session, agent, window_s, response id (''), na, answer keys.., nh, fingerprints..
--       (keys la:<answer key>, lf:<fingerprint>, rp:<response id>: see admit.lua)
--       then per budget:  holder actual ttl_s
--       then per rate:    delta_us
--       then per outcome: target ok(0/1) latency_s probe(0/1) retry_after_s('' none)
--                         consecutive_failures failure_rate window_s min_requests
--                         policy latency_s ('' none) open_s
--       then, with a step: session retention_hours session_steps max_sessions hour
--                         step_JSON agent team model provider step_time input output
--                         cached cache_write cost ntags tags..
-- Returns {dropped, transitions, applied}: the sessions dropped to keep max_sessions (the
-- caller unlinks their keys), the breaker transitions as a flat list target, before,
-- after.., and 0 when this record id was applied before (then nothing was written: a
-- record replayed after a timeout whose first attempt did land).
-- A budget's reservation is released by its holder (the request id, field r:<holder>):
-- once, whatever `reserve` the caller thinks it had. A holder with nothing reserved gets a
-- tombstone ("x", lapsing after dedupe_s), so an admit of it that arrives late reserves
-- nothing.
-- Floats are added here as doubles and stored with 17 digits, not with HINCRBYFLOAT (long
-- double), so every sum is bit-identical to the in-process backend.

local function f(x) return string.format('%.17g', x) end
local function addf(key, field, x)
  local cur = tonumber(redis.call('HGET', key, field)) or 0
  redis.call('HSET', key, field, f(cur + x))
end

local ai, ki = 0, 0
local function arg() ai = ai + 1; return ARGV[ai] end
local function key() ki = ki + 1; return KEYS[ki] end
local function opt(x) if x == '' then return nil end return tonumber(x) end

local now = tonumber(arg())
local nb, nr, nbr = tonumber(arg()), tonumber(arg()), tonumber(arg())
local has_step = arg() == '1'
local all = key()
local done = key()
local id, dedupe_s = arg(), tonumber(arg())
if id ~= '' and not redis.call('SET', done, '1', 'NX', 'EX', dedupe_s) then
  return {{}, {}, 0}
end

-- lineage: what this answer said, for the next request of its run (and hand-offs) to find
if arg() == '1' then
  local P, sid, agent = arg(), arg(), arg()
  local window = math.max(1, math.floor(tonumber(arg())))
  local response = arg()
  local v = agent .. '\n' .. sid
  for _ = 1, tonumber(arg()) do redis.call('SET', P .. 'la:' .. arg(), v, 'EX', window) end
  for _ = 1, tonumber(arg()) do
    -- up to two sessions per fingerprint (one said it, one quoted it back), newline-joined;
    -- a third that says it too makes it boilerplate: '*', which links nothing
    local k = P .. 'lf:' .. arg()
    local known = redis.call('GET', k)
    local v = sid
    if known and known ~= '*' then
      local nl = string.find(known, '\n', 1, true)
      local a, b = known, nil
      if nl then a, b = string.sub(known, 1, nl - 1), string.sub(known, nl + 1) end
      if a == sid or b == sid then v = known
      elseif b then v = '*'
      else v = known .. '\n' .. sid end
    elseif known == '*' then
      v = '*'
    end
    redis.call('SET', k, v, 'EX', window)
  end
  if response ~= '' then redis.call('SET', P .. 'rp:' .. response, sid, 'EX', window) end
end

-- settle budgets: release this request's reservation, add what it really cost
local now_ms = 0
if nb > 0 then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
for _ = 1, nb do
  local k, kx = key(), key()
  local holder, actual, ttl = arg(), tonumber(arg()), tonumber(arg())
  local cur = redis.call('HMGET', k, 'spent', 'reserved', 'r:' .. holder)
  local reserved = tonumber(cur[2]) or 0
  if holder ~= '' then
    if cur[3] and cur[3] ~= 'x' then
      reserved = reserved - tonumber(cur[3])
      if reserved < 1e-12 then reserved = 0 end  -- no float residue once all are released
      redis.call('HDEL', k, 'r:' .. holder)
      redis.call('ZREM', kx, holder)
    elseif not cur[3] then
      redis.call('HSET', k, 'r:' .. holder, 'x')
      redis.call('ZADD', kx, now_ms + dedupe_s * 1000, holder)
      if ttl > 0 then redis.call('EXPIRE', kx, ttl, 'NX') end
    end
  end
  redis.call('HSET', k, 'spent', f((tonumber(cur[1]) or 0) + actual), 'reserved', f(reserved))
  -- a hash that existed has its period's expiry already (set when it was made)
  if ttl > 0 and not cur[1] and not cur[2] then redis.call('EXPIRE', k, ttl, 'NX') end
end

-- token buckets: move the TAT by (real - estimated) tokens; a bucket that already drained
-- (its key expired) has nothing to correct
if nr > 0 then
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1e6 + tonumber(t[2])
  for _ = 1, nr do
    local k = key()
    local delta = tonumber(arg())
    local tat = tonumber(redis.call('GET', k))
    if tat then
      tat = tat + delta
      redis.call('SET', k, f(tat), 'PX', math.max(0, math.floor((tat - now_us) / 1000)) + 1000)
    end
  end
end

-- circuit breakers: breakers.apply_outcome, line for line, on the gateway's clock
local CLOSED, HALF_OPEN, OPEN = 'closed', 'half_open', 'open'
local transitions = {}
for _ = 1, nbr do
  local k = key()
  local target, o_ok, o_latency = arg(), arg() == '1', tonumber(arg())
  local o_probe, o_retry = arg() == '1', opt(arg())
  local p_consecutive, p_rate, p_window = tonumber(arg()), tonumber(arg()), tonumber(arg())
  local p_min, p_latency, p_open = tonumber(arg()), opt(arg()), tonumber(arg())
  local h = redis.call('HMGET', k, 'state', 'until', 'failures', 'window_start',
                       'window_requests', 'window_failures', 'probes')
  local state, till, failures, wstart, wreq, wfail, probes
  if h[1] then
    state, till, failures, wstart = h[1], tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
    wreq, wfail, probes = tonumber(h[5]), tonumber(h[6]), tonumber(h[7])
  else  -- a new breaker, as MemoryState creates it
    state, till, failures, wstart, wreq, wfail, probes = CLOSED, 0, 0, now, 0, 0, 0
  end
  local before = state
  local ok = o_ok and (p_latency == nil or o_latency <= p_latency)
  if o_probe and probes > 0 then probes = probes - 1 end
  if now - wstart >= p_window then wstart, wreq, wfail = now, 0, 0 end
  wreq = wreq + 1
  if ok then
    failures = 0
    if state == HALF_OPEN and o_probe then
      state, till, probes = CLOSED, 0, 0
      wstart, wreq, wfail = now, 0, 0
    end
  else
    failures = failures + 1
    wfail = wfail + 1
    local trip = failures >= p_consecutive
        or (wreq >= p_min and wfail / wreq >= p_rate)
        or o_retry ~= nil
        or (state == HALF_OPEN and o_probe)
    if trip and state ~= OPEN then
      state = OPEN
      till = now + math.max(p_open, o_retry or 0)
      probes = 0
    elseif state == OPEN and o_retry ~= nil then
      till = math.max(till, now + o_retry)
    end
  end
  redis.call('HSET', k, 'state', state, 'until', f(till), 'failures', failures,
             'window_start', f(wstart), 'window_requests', wreq,
             'window_failures', wfail, 'probes', probes)
  redis.call('SADD', all, target)
  if state ~= before then
    transitions[#transitions + 1] = target
    transitions[#transitions + 1] = before
    transitions[#transitions + 1] = state
  end
end

if not has_step then return {{}, transitions, 1} end

local k_sessions, k_unobserved, k_hours, k_summary, k_steps = key(), key(), key(), key(),
    key()
local k_dims = {key(), key(), key(), key(), key()}  -- agent team model provider tag
local sid = arg()
local retention_h = tonumber(arg())
local retention_s = retention_h * 3600
local session_steps, max_sessions, hour = tonumber(arg()), tonumber(arg()), tonumber(arg())
local step_json, agent, team, model, provider = arg(), arg(), arg(), arg(), arg()
local step_time = arg()
local input, output, cached, cache_write = arg(), arg(), arg(), arg()
local cost = tonumber(arg())
input, output = tonumber(input), tonumber(output)
cached, cache_write = tonumber(cached), tonumber(cache_write)
local ntags = tonumber(arg())

-- Counters travel packed: one field "requests input output cached cache_write cost" per
-- name (a dimension's name in an hour bucket; "n" in a session summary, with steps first),
-- read and written whole (two commands instead of seven); the readers also take the
-- one-field-per-counter layout written before (ledger.py _bucket_rows, _counters).
local function unpacked(v)
  local out = {}
  if v then for x in string.gmatch(v, '%S+') do out[#out + 1] = tonumber(x) end end
  return out
end
local function add_to(cur, first)
  local c = unpacked(cur)
  local i = first
  local n = {(c[i] or 0) + 1, (c[i + 1] or 0) + input, (c[i + 2] or 0) + output,
             (c[i + 3] or 0) + cached, (c[i + 4] or 0) + cache_write}
  return string.format('%d %d %d %d %d ', n[1], n[2], n[3], n[4], n[5])
      .. f((c[i + 5] or 0) + cost), c
end

-- hourly spend per dimension (the session dimension is the session summary); a key gets
-- its expiry when a field is first written in it (a new hour, a new name)
local expire_at = (hour + retention_h + 1) * 3600
local function attribute(k, name)
  local packed = add_to(redis.call('HGET', k, name), 1)
  if redis.call('HSET', k, name, packed) == 1 then redis.call('EXPIREAT', k, expire_at) end
end
attribute(k_dims[1], agent)
attribute(k_dims[2], team)
attribute(k_dims[3], model)
attribute(k_dims[4], provider)
for _ = 1, ntags do attribute(k_dims[5], arg()) end
if redis.call('ZADD', k_hours, hour, hour) == 1 then
  redis.call('ZREMRANGEBYSCORE', k_hours, '-inf', '(' .. (hour - retention_h))
  redis.call('EXPIRE', k_hours, retention_s + 3600)
end

-- the session: a session that is not listed (new, dropped or expired) starts afresh
local listed = redis.call('ZSCORE', k_sessions, sid)
local cur = redis.call('HMGET', k_summary, 'last', 'n', 'agent')
local new = not listed or not cur[3]
local last
if new then
  redis.call('DEL', k_summary, k_steps)
  redis.call('HSET', k_summary, 'agent', agent, 'team', team, 'first', step_time)
  cur = {false, false}
  last = tonumber(step_time)
else
  last = tonumber(cur[1]) or tonumber(step_time)
end
if now > last then last = now end
local counted = cur[2]
if not new and not counted then  -- a summary written before counters were packed
  local old = redis.call('HMGET', k_summary, 'steps', 'requests', 'input', 'output',
                         'cached', 'cache_write', 'cost')
  counted = table.concat({old[1] or 0, old[2] or 0, old[3] or 0, old[4] or 0, old[5] or 0,
                          old[6] or 0, old[7] or '0'}, ' ')
  redis.call('HDEL', k_summary, 'steps', 'requests', 'input', 'output', 'cached',
             'cache_write', 'cost')
end
local packed, c = add_to(counted, 2)
redis.call('HSET', k_summary, 'last', f(last), 'n', ((c[1] or 0) + 1) .. ' ' .. packed)
redis.call('RPUSH', k_steps, step_json)
redis.call('LTRIM', k_steps, -session_steps, -1)
redis.call('EXPIRE', k_summary, retention_s)
redis.call('EXPIRE', k_steps, retention_s)

redis.call('ZADD', k_sessions, f(last), sid)
local dropped = {}
if new then
  redis.call('ZADD', k_unobserved, f(last), sid)
  -- only a new session makes the list grow: then forget sessions past retention (their
  -- keys are gone) and keep max_sessions, dropping the least recently active
  local horizon = '(' .. f(now - retention_s)
  redis.call('ZREMRANGEBYSCORE', k_sessions, '-inf', horizon)
  redis.call('ZREMRANGEBYSCORE', k_unobserved, '-inf', horizon)
  local over = redis.call('ZCARD', k_sessions) - max_sessions
  if over > 0 then
    dropped = redis.call('ZRANGE', k_sessions, 0, over - 1)
    redis.call('ZREMRANGEBYRANK', k_sessions, 0, over - 1)
    for i = 1, #dropped do redis.call('ZREM', k_unobserved, dropped[i]) end
  end
  redis.call('EXPIRE', k_sessions, retention_s)
  redis.call('EXPIRE', k_unobserved, retention_s)
else
  redis.call('ZADD', k_unobserved, 'XX', f(last), sid)
end
return {dropped, transitions, 1}
