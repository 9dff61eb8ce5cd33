"""Tool-call repeats and approvals on Redis (the semantics are in tollway.state.toolstate).

A repeat is noted and an approval decided by a small script each, so that concurrent
replicas cannot interleave: a second decision cannot overturn the first.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import orjson

from tollway.state.redis.link import RedisLink
from tollway.state.toolstate import APPROVED, KEEP_DECIDED_S, REJECTED, Approval, ToolState

_NOTE = """
local cur = redis.call('HMGET', KEYS[1], 'r', 'n')
local n = 1
if cur[1] == ARGV[1] then n = tonumber(cur[2]) + 1 end
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'n', n)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
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
    """Keys: ``tl:<session>:<call>`` (hash r, n; PX window), ``ap:<id>`` (JSON; expires an
    hour after its deadline) and ``ap:ix`` (zset id -> created)."""

    def __init__(self, link: RedisLink) -> None:
        self._redis = link.redis
        self._k = link.key
        self._call = link.call
        self._note = link.inline_script(_NOTE)
        self._decide = link.inline_script(_DECIDE)

    async def repeats(self, session: str, call: str) -> tuple[str | None, int]:
        got = await self._call("tools", lambda: self._redis.hmget(
            self._k("tl", session, call), "r", "n"))
        return (got[0], int(got[1])) if got and got[0] is not None else (None, 0)

    async def note_result(self, session: str, call: str, result: str, window_s: float) -> int:
        n = await self._call("tools", lambda: self._note(
            keys=[self._k("tl", session, call)], args=[result, max(1, int(window_s * 1000))]))
        return int(n)

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


def _load(raw: Any) -> Approval | None:
    if not raw:
        return None
    d = orjson.loads(raw)
    return Approval(**{k: d.get(k) for k in Approval.__dataclass_fields__})
