"""Tool-gateway state: repeated tool results per session, and calls held for approval.

Both backends keep the same semantics. A repeat counter is keyed by (session, tool and
arguments) and holds the digest of the last result and how many times in a row it came back;
it expires `window_s` after the last call. An approval is a small record that any replica may
list and decide; the replica holding the call polls it until it is decided or times out.
"""

from __future__ import annotations

import abc
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import orjson

T = TypeVar("T")
PENDING, APPROVED, REJECTED, EXPIRED = "pending", "approved", "rejected", "expired"
_KEEP_DECIDED_S = 3600.0  # decided approvals stay listable this long


@dataclass(slots=True)
class Approval:
    tool: str
    agent: str
    team: str
    session: str
    summary: str  # what the call is: method and path, or the MCP arguments (truncated)
    expires: float  # epoch seconds: undecided by then, rejected
    id: str = field(default_factory=lambda: "apr_" + uuid.uuid4().hex[:16])
    created: float = field(default_factory=time.time)
    status: str = PENDING
    decided_by: str | None = None
    reason: str | None = None
    decided_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.status == PENDING and time.time() >= self.expires:
            d["status"] = EXPIRED
        return d


class ToolState(abc.ABC):
    @abc.abstractmethod
    async def repeats(self, session: str, call: str) -> tuple[str | None, int]:
        """(digest of the last result, how many times in a row) for a call in a session."""

    @abc.abstractmethod
    async def note_result(self, session: str, call: str, result: str, window_s: float) -> int:
        """Record a call's result; returns how many times in a row it has been this one."""

    @abc.abstractmethod
    async def approval_put(self, a: Approval) -> None: ...

    @abc.abstractmethod
    async def approval_get(self, approval_id: str) -> Approval | None: ...

    @abc.abstractmethod
    async def approvals(self) -> list[Approval]:
        """Pending ones and those decided within the last hour, oldest first."""

    @abc.abstractmethod
    async def approval_decide(self, approval_id: str, approve: bool, by: str,
                              reason: str | None) -> Approval | None:
        """Decide a pending, unexpired approval (None when there is none); a decided one is
        returned unchanged, so a second decision cannot overturn the first."""


def _decide(a: Approval, approve: bool, by: str, reason: str | None) -> bool:
    if a.status != PENDING or time.time() >= a.expires:
        return False
    a.status = APPROVED if approve else REJECTED
    a.decided_by, a.reason, a.decided_at = by, reason, time.time()
    return True


class MemoryToolState(ToolState):
    def __init__(self, max_entries: int = 100_000) -> None:
        self._repeats: OrderedDict[tuple[str, str], tuple[str, int, float]] = OrderedDict()
        self._approvals: dict[str, Approval] = {}
        self._max = max_entries

    async def repeats(self, session: str, call: str) -> tuple[str | None, int]:
        found = self._repeats.get((session, call))
        if found is None or found[2] <= time.time():
            return None, 0
        return found[0], found[1]

    async def note_result(self, session: str, call: str, result: str, window_s: float) -> int:
        last, n = await self.repeats(session, call)
        n = n + 1 if last == result else 1
        self._repeats[(session, call)] = (result, n, time.time() + window_s)
        self._repeats.move_to_end((session, call))
        while len(self._repeats) > self._max:
            self._repeats.popitem(last=False)
        return n

    async def approval_put(self, a: Approval) -> None:
        self._prune()
        self._approvals[a.id] = a

    async def approval_get(self, approval_id: str) -> Approval | None:
        return self._approvals.get(approval_id)

    async def approvals(self) -> list[Approval]:
        self._prune()
        return sorted(self._approvals.values(), key=lambda a: a.created)

    async def approval_decide(self, approval_id: str, approve: bool, by: str,
                              reason: str | None) -> Approval | None:
        a = self._approvals.get(approval_id)
        if a is not None:
            _decide(a, approve, by, reason)
        return a

    def _prune(self) -> None:
        cutoff = time.time() - _KEEP_DECIDED_S
        for k in [k for k, a in self._approvals.items()
                  if max(a.expires, a.decided_at or 0) < cutoff]:
            del self._approvals[k]


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

    def __init__(self, redis: Any, key: Callable[..., str],
                 call: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]) -> None:
        self._redis = redis
        self._k = key
        self._call = call
        self._note = redis.register_script(_NOTE)
        self._decide = redis.register_script(_DECIDE)

    async def repeats(self, session: str, call: str) -> tuple[str | None, int]:
        got = await self._call("tools", lambda: self._redis.hmget(
            self._k("tl", session, call), "r", "n"))
        return (got[0], int(got[1])) if got and got[0] is not None else (None, 0)

    async def note_result(self, session: str, call: str, result: str, window_s: float) -> int:
        n = await self._call("tools", lambda: self._note(
            keys=[self._k("tl", session, call)], args=[result, max(1, int(window_s * 1000))]))
        return int(n)

    async def approval_put(self, a: Approval) -> None:
        ttl_ms = max(1, int((a.expires - time.time() + _KEEP_DECIDED_S) * 1000))

        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._k("ap", a.id), orjson.dumps(asdict(a)).decode(), px=ttl_ms)
                pipe.zadd(self._k("ap", "ix"), {a.id: a.created})
                pipe.zremrangebyscore(self._k("ap", "ix"), "-inf",
                                      time.time() - 2 * _KEEP_DECIDED_S - 86400)
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
