"""The runtime keys this process accepts: digest -> record, kept in memory and refreshed from
the State, so that resolving a key costs a dict lookup and never a State round trip.

Every `refresh_s` (a quarter of a second by default) the book reads the State's key version
(on Redis one GET) and reloads every record only when it changed; a key revoked on any
replica is therefore refused everywhere within about `refresh_s` plus one round trip. A
replica that makes a change refreshes at once. While the State is unreachable the book keeps
what it had: revocations cannot be made then either, since they are writes to the same State.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass

from tollway.aio import cancel
from tollway.config.tools import KeyConfig
from tollway.exchange import KeyQuota
from tollway.state.base import StateUnavailable
from tollway.state.keys import KeyRecord, KeyStore

log = logging.getLogger("tollway.keys")


@dataclass(frozen=True, slots=True)
class BookEntry:
    """One secret of a runtime key, with what identity needs built once per load."""

    record: KeyRecord
    until: float | None  # None: the key's current secret; else a rotated-out one, valid until
    limits: KeyConfig | None  # models, tools and expiry, as a config key's are checked
    quota: KeyQuota | None


class KeyBook:
    def __init__(self, store: KeyStore, refresh_s: float = 0.25) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.version: int | None = None
        self.entries: dict[str, BookEntry] = {}
        self._task: asyncio.Task[None] | None = None
        self._down = False

    def lookup(self, digest: str) -> BookEntry | None:
        return self.entries.get(digest)

    async def refresh(self) -> bool:
        """Reload if the State's version moved; whether it did. Raises StateUnavailable."""
        if self.version is not None and await self.store.version() == self.version:
            return False
        version, records = await self.store.snapshot()
        self._load(version, records)
        return True

    def _load(self, version: int, records: list[KeyRecord]) -> None:
        entries: dict[str, BookEntry] = {}
        for rec in records:
            limits = _limits(rec)
            quota = (KeyQuota(rec.budget_usd_day, rec.rpm)
                     if rec.budget_usd_day is not None or rec.rpm is not None else None)
            for digest, until in rec.previous:
                entries[digest] = BookEntry(rec, until, limits, quota)
            entries[rec.digest] = BookEntry(rec, None, limits, quota)
        self.entries = entries  # swapped whole: a request sees one load or the next
        self.version = version

    # --- the background refresh ---------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        """Load now (if the State answers) and keep refreshing in the background."""
        if self._task is not None:
            return
        await self._refresh_logged()
        self._task = asyncio.create_task(self._run(), name="tollway-key-book")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self._refresh_logged()

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except StateUnavailable as exc:
            if not self._down:
                log.warning("runtime keys: the state is unreachable (%s); keeping the %d "
                            "secrets loaded last", exc, len(self.entries))
            self._down = True
            return
        except Exception:  # a bad record must not stop the refresh of every other
            log.exception("runtime keys: refresh failed")
            return
        self._down = False


def _limits(rec: KeyRecord) -> KeyConfig | None:
    if rec.models is None and rec.tools is None and rec.expires is None:
        return None
    return KeyConfig(
        key="sha256:" + rec.digest,
        models=list(rec.models) if rec.models is not None else None,
        tools=list(rec.tools) if rec.tools is not None else None,
        expires=(datetime.datetime.fromtimestamp(rec.expires, datetime.UTC)
                 if rec.expires is not None else None))
