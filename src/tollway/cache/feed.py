"""Sharing the semantic index across replicas through a plain Redis stream (no modules).

Every stored entry appends one record to ``{prefix}:sc``: its vector (float16), the text it
answers, its partition, where its body is and when it expires. Every replica follows the
stream into its own in-process index and fetches the body (a plain key with a TTL) on a hit.
The stream is trimmed to the entries still alive (by age, via ``MINID``, and by count), so it
is its own snapshot: a new replica reads it from the start, then blocks on its tail. An entry
whose body has expired or been purged is dropped by whichever replica finds it missing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from tollway.state.redis.connect import REDIS_ERRORS, async_client

if TYPE_CHECKING:
    from tollway.cache.semantic.matcher import Vector
    from tollway.config.model import RedisConfig

log = logging.getLogger(__name__)

_BLOCK_MS = 2000
_PAGE = 500
_TRIM_EVERY_S = 60.0


@dataclass(slots=True)
class FeedRecord:
    key: int
    partition: str
    text: str
    body_key: str
    expires: float  # epoch seconds
    model: str  # the embedder's name: vectors of other models are never compared
    vector: Vector

    def encode(self) -> dict[str, bytes]:
        meta = orjson.dumps({"k": self.key, "p": self.partition, "t": self.text,
                             "b": self.body_key, "e": self.expires, "m": self.model})
        return {"m": meta, "v": self.vector.astype("<f2").tobytes()}

    @classmethod
    def decode(cls, fields: dict[bytes, bytes]) -> FeedRecord | None:
        try:
            m = orjson.loads(fields[b"m"])
            vec = np.frombuffer(fields[b"v"], dtype="<f2").astype(np.float32)
            return cls(int(m["k"]), m["p"], m["t"], m["b"], float(m["e"]), m["m"], vec)
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
            return None


Apply = Callable[[list[FeedRecord]], Awaitable[None]]
OnVerdict = Callable[[dict[str, Any]], None]


class RedisFeed:
    def __init__(self, rc: RedisConfig, *, max_len: int, keep_s: float) -> None:
        # A single Redis or a cluster (the stream's key is under the gateway's hash tag, so
        # a cluster client reads and writes it on the node that owns the gateway's slot).
        timeout = rc.timeout_ms / 1000
        self._writer = async_client(rc, socket_timeout=max(timeout, 0.5),
                                    decode_responses=False, bounded=False)
        self._reader = async_client(rc, socket_timeout=_BLOCK_MS / 1000 + 5,
                                    decode_responses=False, bounded=False)
        self.stream = "{" + rc.key_prefix + "}:sc"
        self._max_len = max_len
        self._keep_ms = int(keep_s * 1000)
        self._retry_s = rc.retry_interval_s
        self.last_id = b"0-0"
        self.on_verdict: OnVerdict | None = None  # a judged exploration, any replica's
        self.caught_up = asyncio.Event()
        self.settled = asyncio.Event()  # caught up, or found Redis unreachable: stop waiting

    async def publish(self, record: FeedRecord) -> bool:
        try:
            await self._writer.xadd(self.stream, record.encode(),  # type: ignore[arg-type]
                                    maxlen=self._max_len, approximate=True)
        except REDIS_ERRORS as exc:
            log.debug("semantic cache: could not publish an entry: %s", exc)
            return False
        return True

    async def publish_verdict(self, verdict: dict[str, Any]) -> bool:
        """A judge's verdict on an entry: every replica learns from it (the stream keeps it
        as long as entries live, so a starting replica learns it too)."""
        try:
            await self._writer.xadd(self.stream, {"j": orjson.dumps(verdict)},
                                    maxlen=self._max_len, approximate=True)
        except REDIS_ERRORS as exc:
            log.debug("semantic cache: could not publish a verdict: %s", exc)
            return False
        return True

    async def follow(self, apply: Apply) -> None:
        """Read the stream from the start, then its tail, forever; survives Redis restarts."""
        trimmed = 0.0
        down = False
        while True:
            try:
                if not self.caught_up.is_set():
                    await self._catch_up(apply)
                    self.caught_up.set()
                    self.settled.set()
                reply = await self._reader.xread({self.stream: self.last_id}, count=_PAGE,
                                                 block=_BLOCK_MS)
                if down:
                    log.info("semantic cache: following the shared index again")
                    down = False
                for _, entries in reply or ():
                    await self._apply(entries, apply)
                if time.monotonic() - trimmed > _TRIM_EVERY_S:
                    trimmed = time.monotonic()
                    await self._trim()
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                self.settled.set()
                if not down:
                    log.warning("semantic cache: Redis unreachable, the shared index waits: %s",
                                exc)
                    down = True
                await asyncio.sleep(self._retry_s)

    async def _catch_up(self, apply: Apply) -> None:
        start = b"-" if self.last_id == b"0-0" else b"(" + self.last_id
        while True:
            entries = await self._reader.xrange(self.stream, min=start, count=_PAGE)
            if not entries:
                return
            await self._apply(entries, apply)
            start = b"(" + self.last_id

    async def _apply(self, entries: list[tuple[bytes, dict[bytes, bytes]]], apply: Apply) -> None:
        records = []
        for entry_id, fields in entries:
            self.last_id = entry_id
            if b"j" in fields:
                self._verdict(fields[b"j"])
                continue
            record = FeedRecord.decode(fields)
            if record is not None:
                records.append(record)
        if records:
            await apply(records)

    def _verdict(self, raw: bytes) -> None:
        try:
            verdict = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if isinstance(verdict, dict) and self.on_verdict is not None:
            self.on_verdict(verdict)

    async def _trim(self) -> None:
        """Entries older than the longest TTL are dead everywhere: drop them from the stream."""
        server_ms = int(time.time() * 1000)
        await self._writer.xtrim(self.stream, minid=f"{server_ms - self._keep_ms}-0",
                                 approximate=True)

    async def close(self) -> None:
        await self._writer.aclose()
        await self._reader.aclose()
