"""redis-py's asyncio cluster client, with the single-Redis pool's bound.

A gateway's keys all hash to one slot, so nearly every command goes to one node: the
primary that owns the slot. redis-py's `RedisCluster` follows MOVED and ASK redirections
and refreshes its map of slots to nodes after a connection error, which is what lets
tollway ride a failover; but its per-node pool raises `MaxConnectionsError` at once when
every connection is busy, where the single-Redis `BlockingConnectionPool` waits for one. A
burst of requests on a busy machine would then read as "Redis is down". `BoundedCluster`
restores the single-Redis behaviour: at most `max_connections` commands (or pipelines) in
flight per client, a caller waits up to `wait_s` for a turn and then gets the same
ConnectionError("No connection available.") as from the blocking pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

# Set while a caller holds a turn, so that a command the client runs on its behalf (a
# pipeline retrying a redirected command alone, say) does not wait for a second turn.
_HOLDING: ContextVar[bool] = ContextVar("tollway_redis_turn", default=False)


class _Turns:
    def __init__(self, n: int, wait_s: float) -> None:
        self._sem = asyncio.Semaphore(n)
        self._wait_s = wait_s

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if _HOLDING.get():
            yield
            return
        try:
            async with asyncio.timeout(self._wait_s):
                await self._sem.acquire()
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None
        token = _HOLDING.set(True)
        try:
            yield
        finally:
            _HOLDING.reset(token)
            self._sem.release()


class BoundedCluster(RedisCluster):
    """A RedisCluster with at most `max_connections` commands in flight, waiting `wait_s`
    for a turn (see the module docstring)."""

    def __init__(self, *args: Any, max_connections: int, wait_s: float, **kw: Any) -> None:
        # Per node, one more than the turns: the topology refresh opens its own.
        super().__init__(*args, max_connections=max_connections + 1, **kw)
        self.turns = _Turns(max_connections, wait_s)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turns.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None,
                 shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return _BoundedPipeline(self, transaction)

    async def node_of(self, key: str) -> ClusterNode:
        """The primary that owns `key`'s slot, as this client knows it (a refresh asked for
        by an earlier error runs first)."""
        await self.initialize()
        return self.get_node_from_key(key)


class _BoundedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, BoundedCluster)
        async with client.turns.turn():
            return await super().execute(raise_on_error, allow_redirections)
