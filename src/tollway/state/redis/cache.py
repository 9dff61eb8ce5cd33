"""Cached answers on Redis: one string key per entry (under the gateway's prefix), with a
PX expiry. Reads and writes on the request path are best effort: while the state is down,
or when a command fails, a read is a miss and a write is skipped, so the request simply goes
upstream. `purge` and `size` (the admin API, the metrics) raise StateUnavailable; they SCAN
through the link, which on a cluster scans the one node that holds the gateway's keys."""

from __future__ import annotations

from tollway.state.base import Cache, StateUnavailable
from tollway.state.redis.link import RedisLink


class RedisCache(Cache):
    def __init__(self, link: RedisLink) -> None:
        self._link = link

    async def get(self, key: str) -> bytes | None:
        link = self._link
        if not link.up:
            return None  # a miss, not an error: the request goes upstream
        try:
            value = await link.call("cache", lambda: link.redis.get(link.key(key)))
        except StateUnavailable:
            return None
        return value.encode() if value is not None else None

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        link = self._link
        if not link.up:
            return
        try:
            await link.call("cache", lambda: link.redis.set(
                link.key(key), value.decode(), px=max(1, int(ttl_s * 1000))))
        except StateUnavailable:
            pass

    async def purge(self, pattern: str) -> int:
        link = self._link

        async def run() -> int:
            gone = 0
            async for k in link.scan(link.key(pattern), 500):
                gone += await link.redis.unlink(k)
            return gone

        return int(await link.call("cache", run))

    async def size(self, prefix: str = "c:") -> int:
        link = self._link

        async def run() -> int:
            n = 0
            async for _ in link.scan(link.key(prefix) + "*", 1000):
                n += 1
            return n

        return int(await link.call("cache", run))
