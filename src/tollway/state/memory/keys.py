"""Runtime keys in process memory: a dict by id and a version counter (one process, so the
key book of that process is the only reader)."""

from __future__ import annotations

from tollway.state.keys import Change, KeyExists, KeyRecord, KeyStore


class MemoryKeys(KeyStore):
    def __init__(self) -> None:
        self._recs: dict[str, KeyRecord] = {}
        self._version = 0

    async def create(self, rec: KeyRecord) -> None:
        if rec.id in self._recs:
            raise KeyExists(rec.id)
        self._recs[rec.id] = rec
        self._version += 1

    async def get(self, key_id: str) -> KeyRecord | None:
        return self._recs.get(key_id)

    async def snapshot(self) -> tuple[int, list[KeyRecord]]:
        return self._version, list(self._recs.values())

    async def version(self) -> int:
        return self._version

    async def _swap(self, key_id: str, change: Change) -> KeyRecord | None:
        rec = self._recs.get(key_id)
        if rec is None:
            return None
        new = change(rec)  # may raise (KeyRevoked): nothing is written then
        if new != rec:
            self._recs[key_id] = new
            self._version += 1
        return new
