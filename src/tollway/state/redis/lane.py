"""Script calls on a lean path: packed EVALSHAs, written together, on a pool of our own.

Every request makes one or two script calls (admit before, record after). Through
redis-py's general client each one also pays for what a script call does not need: its
blocking pool (a condition, a lock, a timeout scope and three observability records per
checkout), a retry wrapper, a per-command observability hook, packing argument by argument
in Python, and a write under `asyncio.wait_for`, which runs the write as a task of its own
(one more event-loop pass per call). And under load many requests make their call in the
same pass of the event loop: the lane writes those calls together (one write, one wake-up
for the replies, read back in order) as Redis pipelining allows, so each request no longer
pays a system call and a loop wake-up of its own on either side. Measured on the
guards-on-Redis bench row: see the README's Benchmark section.

The lane keeps what matters: connections are redis-py's own (`connection_class` and the
keyword arguments of the client's pool, so URL, auth, TLS, database and RESP version are
the same), at most `max_connections` of them in use (a caller waits up to `wait_s` for a
turn, then fails as the client would, "No connection available"), and every call answers
within `timeout_s` or fails with redis-py's TimeoutError. A caller that stops waiting (its
request cancelled) still has its reply read, so the connection stays in step; a batch that
did not end whole (a timeout, a broken socket) closes its connection before it goes back
to the pool, so no call ever reads another call's answer. A reply that is an error
(NOSCRIPT, a script's own error) is that caller's alone.

Only a single Redis takes the lane; a cluster keeps its client (which routes by slot and
follows redirections).
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tollway.aio import cancel


def pack(args: tuple[Any, ...]) -> bytes:
    """RESP in one C call. A str that is not valid UTF-8 (a lone surrogate from a header)
    goes as its bytes, as redis-py's encoder sends it; what Redis cannot take (None, a
    bool) is refused as redis-py refuses it."""
    try:
        return hiredis.pack_command(args)
    except UnicodeEncodeError:
        return hiredis.pack_command(tuple(
            a.encode("utf-8", "surrogateescape") if type(a) is str else a for a in args))
    except TypeError as exc:
        raise DataError(f"a Redis argument must be bytes, str, int or float: {exc}") from exc


def _closed_by_peer(conn: AbstractConnection) -> bool:
    reader = getattr(conn, "_reader", None)
    return reader is not None and (reader.at_eof() or reader.exception() is not None)


def _fail(batch: list[tuple[bytes, asyncio.Future[Any]]], exc: BaseException) -> None:
    if not isinstance(exc, Exception):  # the lane is closing under them
        exc = RedisConnectionError("the Redis lane was closed")
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)


class Lane:
    def __init__(self, pool: ConnectionPool, *, max_connections: int, wait_s: float,
                 timeout_s: float) -> None:
        # socket_timeout None: the lane's own timeout scope bounds the write and the read
        # together (redis-py would run the write under wait_for, a task per call).
        self._kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        self._cls = pool.connection_class
        self._idle: list[AbstractConnection] = []
        self._all: list[AbstractConnection] = []
        self._turns = asyncio.Semaphore(max_connections)
        self._batch: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._wait_s = wait_s
        self._timeout_s = timeout_s

    async def call(self, *args: Any) -> Any:
        """Run one command (its arguments bytes, str, int or float) and return its reply.
        Every call made in one pass of the event loop goes out in one write on one
        connection, and their replies are read back in order."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batch.append((pack(args), fut))
        if len(self._batch) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        """One batch on one connection. A caller that stopped waiting (cancelled) still has
        its reply read, so the connection stays in step; a batch that did not end whole
        (timeout, broken socket) closes its connection and fails the callers left."""
        try:
            await self._turn()
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        conn = self._idle.pop() if self._idle else self._new()
        try:
            if conn.is_connected and _closed_by_peer(conn):
                # Redis went away since this connection's last call (a restart, a failover):
                # the FIN is already read, so take a new one instead of failing this batch
                await conn.disconnect(nowait=True)
            if not conn.is_connected:
                await self._connect(conn)
            try:
                async with asyncio.timeout(self._timeout_s):
                    await conn.send_packed_command([p for p, _ in batch], check_health=False)
                    for _, fut in batch:
                        try:
                            reply = await conn.read_response()
                        except ResponseError as exc:  # a whole reply: still in step
                            if not fut.done():
                                fut.set_exception(exc)
                            continue
                        if not fut.done():
                            fut.set_result(reply)
            except TimeoutError as exc:
                raise RedisTimeoutError("Timeout reading from Redis") from exc
        except BaseException as exc:
            await conn.disconnect(nowait=True)
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._idle.append(conn)
            self._turns.release()

    async def _turn(self) -> None:
        turns = self._turns
        if not turns.locked():
            await turns.acquire()
            return
        try:
            async with asyncio.timeout(self._wait_s):
                await turns.acquire()
        except TimeoutError as exc:
            raise RedisConnectionError("No connection available.") from exc

    async def _connect(self, conn: AbstractConnection) -> None:
        """Connect and hand-shake (redis-py sends its client name and version, and AUTH and
        SELECT when the URL asks): a Redis that accepts connections but does not answer
        (frozen, overloaded) must fail here too, within `wait_s`."""
        try:
            async with asyncio.timeout(self._wait_s):
                await conn.connect()
        except TimeoutError as exc:
            raise RedisConnectionError("Timeout connecting to Redis") from exc

    def _new(self) -> AbstractConnection:
        conn = self._cls(**self._kwargs)
        self._all.append(conn)
        return conn

    async def aclose(self) -> None:
        await cancel(*self._running)
        for conn in self._all:
            await conn.disconnect(nowait=True)
        self._idle.clear()
        self._all.clear()
