"""Runtime keys on Redis: ``vk:recs`` (hash id -> record JSON, digests included, never a
secret) and ``vk:ver`` (a counter every write INCRs). Both carry the gateway's hash tag, so
on a cluster they share its slot and the write script may touch both.

Every write is one compare-and-set script: the record is replaced only if it is still the
one read, and the version is bumped in the same step, so a replica polling the version
(`GET vk:ver`, the cheap read) never misses a change. A writer that lost the race reads
again and retries.
"""

from __future__ import annotations

from typing import Any

import orjson

from tollway.state.keys import Change, KeyExists, KeyRecord, KeyStore
from tollway.state.redis.link import RedisLink

# KEYS: records hash, version. ARGV: id, the JSON expected ('' = absent), the new JSON.
# Returns the new version, or -1 when the stored record is not the one expected.
_CAS = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur or '') ~= ARGV[2] then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return redis.call('INCR', KEYS[2])
"""

_RETRIES = 16


class RedisKeys(KeyStore):
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._recs = link.key("vk", "recs")
        self._ver = link.key("vk", "ver")
        self._cas = link.inline_script(_CAS)

    async def _put(self, key_id: str, expected: str, rec: KeyRecord) -> bool:
        body = orjson.dumps(rec.to_dict()).decode()
        got = await self._link.call("keys", lambda: self._cas(
            keys=[self._recs, self._ver], args=[key_id, expected, body]))
        return int(got) >= 0

    async def _raw(self, key_id: str) -> str | None:
        raw: Any = await self._link.call("keys", lambda: self._link.redis.hget(
            self._recs, key_id))
        return raw

    async def create(self, rec: KeyRecord) -> None:
        if not await self._put(rec.id, "", rec):
            raise KeyExists(rec.id)

    async def get(self, key_id: str) -> KeyRecord | None:
        raw = await self._raw(key_id)
        return KeyRecord.from_dict(orjson.loads(raw)) if raw else None

    async def snapshot(self) -> tuple[int, list[KeyRecord]]:
        async def run() -> list[Any]:
            # The version first: records read after it are at least that new, so a write in
            # between only makes the next poll reload once more.
            version = await self._link.redis.get(self._ver)
            recs = await self._link.redis.hgetall(self._recs)
            return [version, recs]

        version, recs = await self._link.call("keys", run)
        return int(version or 0), [KeyRecord.from_dict(orjson.loads(v)) for v in recs.values()]

    async def version(self) -> int:
        got = await self._link.call("keys", lambda: self._link.redis.get(self._ver))
        return int(got or 0)

    async def _swap(self, key_id: str, change: Change) -> KeyRecord | None:
        for _ in range(_RETRIES):
            raw = await self._raw(key_id)
            if not raw:
                return None
            rec = KeyRecord.from_dict(orjson.loads(raw))
            new = change(rec)
            if new == rec or await self._put(key_id, raw, new):
                return new
        raise RuntimeError(f"key {key_id}: too many concurrent writes")
