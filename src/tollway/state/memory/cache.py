"""Cached answers in process memory: an LRU of `entries` keys, each with its expiry."""

from __future__ import annotations

import fnmatch
import time
from collections import OrderedDict

from tollway.state.base import Cache


class MemoryCache(Cache):
    def __init__(self, entries: int = 10_000) -> None:
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._cache_entries = entries

    async def get(self, key: str) -> bytes | None:
        hit = self._cache.get(key)
        if hit is None:
            return None
        if hit[0] < time.time():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return hit[1]

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._cache[key] = (time.time() + ttl_s, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)

    async def purge(self, pattern: str) -> int:
        gone = [k for k in self._cache if fnmatch.fnmatchcase(k, pattern)]
        for k in gone:
            del self._cache[k]
        return len(gone)

    async def size(self, prefix: str = "c:") -> int:
        return sum(1 for k in self._cache if k.startswith(prefix))
