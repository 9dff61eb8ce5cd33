"""The audit log: every step and every admin action, in a tamper-evident chain.

Each record carries the hash of the one before it (``prev``) and its own (``hash``, over its
canonical JSON without the hash), so editing a line breaks its own hash and deleting or
reordering lines breaks the link to the next; `tollway audit verify FILE...` says where.
Sinks: JSON lines on disk (rotated by size; the chain continues into the next file), or a
Redis stream shared by every replica (the chain is extended atomically by a script, with
SHA-1, the only hash Redis scripts have; `tollway audit export` writes it out as JSON lines
that `verify` checks the same way). Appending never waits on the disk or on Redis: records
go into a bounded queue that a background task writes in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from tollway.aio import cancel

if TYPE_CHECKING:
    from tollway.config.model import RedisConfig
    from tollway.state.redis.script import SyncScript

log = logging.getLogger("tollway.audit")
GENESIS = "0" * 64
_FLUSH_S = 0.2
_BATCH = 512


def canonical(record: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in record.items() if k != "hash"},
                        option=orjson.OPT_SORT_KEYS)


def digest(record: dict[str, Any]) -> str:
    body = canonical(record)
    if record.get("alg") == "sha1":  # records chained by the Redis sink's script
        return hashlib.sha1(record["prev"].encode() + body, usedforsecurity=False).hexdigest()
    return hashlib.sha256(record["prev"].encode() + body).hexdigest()


class FileSink:
    """Appends chained lines to `path`; past `max_mb` it becomes `path.1` (older ones shift
    up, `keep` are kept) and a new file continues the chain."""

    def __init__(self, path: str, max_mb: float, keep: int) -> None:
        self.path = Path(path)
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.keep = keep
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.prev, self.seq = self._tail()
        self._file = self.path.open("ab")

    def _tail(self) -> tuple[str, int]:
        """Continue the chain where the last run left it."""
        for p in (self.path, self.path.with_name(self.path.name + ".1")):
            try:
                with p.open("rb") as f:
                    f.seek(0, os.SEEK_END)
                    size = f.tell()
                    f.seek(max(0, size - 65536))
                    lines = f.read().splitlines()
            except OSError:
                continue
            for line in reversed(lines):
                try:
                    rec = orjson.loads(line)
                    return str(rec["hash"]), int(rec["seq"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
        return GENESIS, 0

    def write(self, records: list[dict[str, Any]]) -> None:
        out = []
        for data in records:
            self.seq += 1
            rec = {"seq": self.seq, **data, "prev": self.prev}
            rec["hash"] = self.prev = digest(rec)
            out.append(orjson.dumps(rec) + b"\n")
        self._file.write(b"".join(out))
        self._file.flush()
        if self._file.tell() >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(self.path.name + ".1"))
        self._file = self.path.open("ab")

    def close(self) -> None:
        self._file.close()


# ARGV: max stream length, genesis hash, then one canonical JSON prefix per record (its
# fields sorted, all of which sort before "prev", without the closing brace). The script
# closes each with its place in the chain, hashes it and appends it.
_XADD_CHAINED = """
local prev = redis.call('GET', KEYS[2]) or ARGV[2]
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
for i = 3, #ARGV do
  seq = seq + 1
  local canon = ARGV[i] .. ',"prev":"' .. prev .. '","seq":' .. string.format('%d', seq) .. '}'
  local h = redis.sha1hex(prev .. canon)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'r', canon, 'h', h)
  prev = h
end
redis.call('SET', KEYS[2], prev)
redis.call('SET', KEYS[3], seq)
return seq
"""


class RedisSink:
    """One chained log for every replica: a stream `{prefix}:audit`; the script takes the
    last hash and sequence number and extends the chain atomically. Its three keys share
    the gateway's hash tag, so on a Redis Cluster (`state.redis.cluster`) they are on one
    node and the script is legal there. The client is built on first use, in the writer's
    thread: a cluster client connects as it is built, and an unreachable Redis must not
    stop the gateway from starting (the records wait in the queue)."""

    def __init__(self, rc: RedisConfig, max_len: int) -> None:
        self._rc = rc
        self._client: Any = None
        self._script: SyncScript | None = None
        self.stream = "{" + rc.key_prefix + "}:audit"
        self._keys = [self.stream, self.stream + ":last", self.stream + ":seq"]
        self._max_len = max_len

    def _connected(self) -> tuple[Any, SyncScript]:
        if self._client is None or self._script is None:
            from tollway.state.redis.connect import sync_client
            from tollway.state.redis.script import SyncScript

            self._client = sync_client(self._rc, socket_timeout=2)
            self._script = SyncScript(self._client, _XADD_CHAINED)
        return self._client, self._script

    def write(self, records: list[dict[str, Any]]) -> None:
        args = [str(self._max_len), GENESIS]
        for data in records:
            rec = {**data, "alg": "sha1"}  # keys: alg, at, data, kind: all before "prev"
            args.append(orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)[:-1].decode())
        _, script = self._connected()
        script(keys=self._keys, args=args)

    def export(self, out: Any) -> int:
        """Write the stream as JSON lines that `verify` checks; returns the count."""
        client, _ = self._connected()
        n = 0
        last = "-"
        while True:
            entries = client.xrange(self.stream, min=last, count=1000)
            if last != "-":
                entries = entries[1:]
            if not entries:
                return n
            for entry_id, fields in entries:
                rec = orjson.loads(fields[b"r"])
                rec["hash"] = fields[b"h"].decode()
                out.write(orjson.dumps(rec) + b"\n")
                n += 1
                last = entry_id.decode()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class Audit:
    """Queue records from the event loop; a background task hands them to the sink."""

    def __init__(self, sink: FileSink | RedisSink, max_queue: int = 100_000) -> None:
        self.sink = sink
        self._queue: list[dict[str, Any]] = []
        self._max_queue = max_queue
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def append(self, kind: str, data: dict[str, Any]) -> None:
        if len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        self._queue.append({"at": round(time.time(), 6), "kind": kind, "data": data})
        if len(self._queue) >= _BATCH:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_FLUSH_S):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.sink.write, batch)
        except Exception:
            log.exception("could not write %d audit records; they are kept for the next "
                          "attempt", len(batch))
            self._queue[:0] = batch[: self._max_queue]

    async def close(self) -> None:
        await cancel(self._task)
        await self.flush()
        self.sink.close()


def verify(paths: list[str]) -> tuple[bool, str]:
    """Check the chain through the files in order (oldest first). Returns (ok, report)."""
    prev: str | None = None
    seq: int | None = None
    count = 0
    for path in paths:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                where = f"{path}:{n}"
                try:
                    rec = orjson.loads(line)
                    stated = rec["hash"]
                    rec_prev = rec["prev"]
                    rec_seq = int(rec["seq"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    return False, f"{where}: not an audit record (the line was edited)"
                if digest(rec) != stated:
                    return False, (f"{where}: record {rec_seq} does not match its hash "
                                   f"(the line was edited)")
                if prev is not None and rec_prev != prev:
                    return False, (f"{where}: record {rec_seq} does not follow record {seq} "
                                   f"(lines were deleted, inserted or reordered before it)")
                if seq is not None and rec_seq != seq + 1:
                    return False, (f"{where}: record {rec_seq} comes after record {seq} "
                                   f"(records {seq + 1}..{rec_seq - 1} are missing)")
                prev, seq = stated, rec_seq
                count += 1
    return True, f"ok: {count} records, chain intact" + (f", last hash {prev}" if prev else "")
