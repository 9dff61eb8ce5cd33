"""Tool-call repeats and approvals on Redis (the semantics are in tollway.state.toolstate).

Repeats are read by one small script and noted by another (both counters of a call in one
round trip each), and an approval is decided by a third, so that concurrent replicas cannot
interleave: a second decision cannot overturn the first.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import orjson

from tollway.state.redis.link import RedisLink
from tollway.state.toolstate import (
    APPROVED,
    KEEP_DECIDED_S,
    REJECTED,
    Approval,
    Repeats,
    ResultNote,
    ToolState,
)

# KEYS: the call's run, the tool's run. ARGV: window ms, then per run: tracked ('1' or ''),
# the result digest ('' ends the run), and for the tool's run its excerpt.
_NOTE = """
local out = {0, 0}
local function note(key, result, excerpt, i)
  if result == '' then redis.call('DEL', key) return end
  local cur = redis.call('HMGET', key, 'r', 'n')
  local n = 1
  if cur[1] == result then n = tonumber(cur[2]) + 1 end
  redis.call('HSET', key, 'r', result, 'n', n, 'x', excerpt)
  redis.call('PEXPIRE', key, ARGV[1])
  out[i] = n
end
if ARGV[2] == '1' then note(KEYS[1], ARGV[3], '', 1) end
if ARGV[4] == '1' then note(KEYS[2], ARGV[5], ARGV[6], 2) end
return out
"""

_READ = """
local c = redis.call('HMGET', KEYS[1], 'n')
local t = redis.call('HMGET', KEYS[2], 'n', 'x')
return {c[1] or '0', t[1] or '0', t[2] or ''}
"""

_DECIDE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local a = cjson.decode(raw)
if a['status'] ~= 'pending' or tonumber(ARGV[5]) >= a['expires'] then return raw end
a['status'] = ARGV[1]
a['decided_by'] = ARGV[2]
if ARGV[3] ~= '' then a['reason'] = ARGV[3] end
a['decided_at'] = tonumber(ARGV[5])
local out = cjson.encode(a)
redis.call('SET', KEYS[1], out, 'KEEPTTL')
return out
"""


class RedisToolState(ToolState):
    """Keys: ``tl:<session>:<call>`` and ``tp:<session>:<tool>`` (hash r, n, x; PX window),
    ``ap:<id>`` (JSON; expires an hour after its deadline) and ``ap:ix`` (zset id ->
    created)."""

    def __init__(self, link: RedisLink) -> None:
        self._redis = link.redis
        self._k = link.key
        self._call = link.call
        self._note = link.inline_script(_NOTE)
        self._read = link.inline_script(_READ)
        self._decide = link.inline_script(_DECIDE)

    def _keys(self, session: str, call: str | None, tool: str | None) -> list[str]:
        return [self._k("tl", session, call or ""), self._k("tp", session, tool or "")]

    async def repeats(self, session: str, call: str | None, tool: str | None) -> Repeats:
        if call is None and tool is None:
            return Repeats()
        got = await self._call("tools", lambda: self._read(
            keys=self._keys(session, call, tool), args=[]))
        n_call, n_tool, excerpt = (_str(g) for g in got)
        return Repeats(int(n_call) if call is not None else 0,
                       int(n_tool) if tool is not None else 0,
                       excerpt if tool is not None else "")

    async def note_result(self, session: str, note: ResultNote, window_s: float) -> Repeats:
        if note.call is None and note.tool is None:
            return Repeats()
        args = [max(1, int(window_s * 1000)),
                "1" if note.call is not None else "", note.result or "",
                "1" if note.tool is not None else "", note.same or "", note.excerpt]
        got = await self._call("tools", lambda: self._note(
            keys=self._keys(session, note.call, note.tool), args=args))
        n_tool = int(got[1])
        return Repeats(int(got[0]), n_tool, note.excerpt if n_tool else "")

    async def approval_put(self, a: Approval) -> None:
        ttl_ms = max(1, int((a.expires - time.time() + KEEP_DECIDED_S) * 1000))

        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._k("ap", a.id), orjson.dumps(asdict(a)).decode(), px=ttl_ms)
                pipe.zadd(self._k("ap", "ix"), {a.id: a.created})
                pipe.zremrangebyscore(self._k("ap", "ix"), "-inf",
                                      time.time() - 2 * KEEP_DECIDED_S - 86400)
                await pipe.execute()

        await self._call("tools", run)

    async def approval_get(self, approval_id: str) -> Approval | None:
        raw = await self._call("tools", lambda: self._redis.get(self._k("ap", approval_id)))
        return _load(raw)

    async def approvals(self) -> list[Approval]:
        async def run() -> list[Any]:
            ids = await self._redis.zrange(self._k("ap", "ix"), 0, -1)
            if not ids:
                return []
            return list(await self._redis.mget([self._k("ap", i) for i in ids]))

        found = [_load(raw) for raw in await self._call("tools", run)]
        return [a for a in found if a is not None]

    async def approval_decide(self, approval_id: str, approve: bool, by: str,
                              reason: str | None) -> Approval | None:
        raw = await self._call("tools", lambda: self._decide(
            keys=[self._k("ap", approval_id)],
            args=[APPROVED if approve else REJECTED, by, reason or "", "", repr(time.time())]))
        return _load(raw)


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _load(raw: Any) -> Approval | None:
    if not raw:
        return None
    d = orjson.loads(raw)
    return Approval(**{k: d[k] for k in Approval.__dataclass_fields__ if k in d})
