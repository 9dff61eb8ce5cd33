-- probe.lua: may a caller try a target whose breaker looked open? breakers.take_probe in
-- one atomic step, so across every gateway process at most half_open_probes probes are in
-- flight.
--
-- KEYS  1 br:<target> (hash: state until failures window_start window_requests
--         window_failures probes)   2 br:all (set of breaker targets)
-- ARGV  1 target  2 now (the gateway's clock, as record.lua's outcomes)  3 half_open_probes
--       4 open_s (a half-open round lasts this long; probes not answered by then are lost)
-- Returns {allowed(0/1), state, until, failures, window_start, window_requests,
--          window_failures, probes, before, after} (before/after '' without a transition).
-- Floats travel as strings: a Lua number in a reply is truncated to an integer.

local function f(x) return string.format('%.17g', x) end
local CLOSED, HALF_OPEN, OPEN = 'closed', 'half_open', 'open'

local target, now, max_probes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local open_s = tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'state', 'until', 'failures', 'window_start',
                     'window_requests', 'window_failures', 'probes')
local state, till, failures, wstart, wreq, wfail, probes
local dirty = false
if h[1] then
  state, till, failures, wstart = h[1], tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
  wreq, wfail, probes = tonumber(h[5]), tonumber(h[6]), tonumber(h[7])
else  -- unknown: a new closed breaker, as MemoryState creates it
  state, till, failures, wstart, wreq, wfail, probes = CLOSED, 0, 0, now, 0, 0, 0
  dirty = true
end

local allowed, before, after = 0, '', ''
if state == CLOSED then
  allowed = 1
elseif state == OPEN and now < till then
  allowed = 0
else
  if state == OPEN then
    state, probes, till = HALF_OPEN, 0, now + open_s
    before, after, dirty = OPEN, HALF_OPEN, true
  elseif now >= till then  -- half-open with probes that never reported: a new round
    probes, till, dirty = 0, now + open_s, true
  end
  if probes < max_probes then
    probes = probes + 1
    allowed, dirty = 1, true
  end
end

if dirty then
  redis.call('HSET', KEYS[1], 'state', state, 'until', f(till), 'failures', failures,
             'window_start', f(wstart), 'window_requests', wreq,
             'window_failures', wfail, 'probes', probes)
  redis.call('SADD', KEYS[2], target)
end
return {allowed, state, f(till), failures, f(wstart), wreq, wfail, probes, before, after}
