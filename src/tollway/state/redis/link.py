"""The one connection every Redis facet shares, and whether Redis is there at all.

`RedisLink` owns the bounded client (one Redis, or a Redis Cluster: see `connect`), the key
prefix (`key()`), the up/down state and the background probe. Facets run their
off-hot-path commands through `call()`, which counts failures in
tollway_state_errors_total{op} and raises them as StateUnavailable; a failure that means
Redis is not there (DOWN_ERRORS, as opposed to a refused command) also marks the state
down. While down, a probe asks every `retry_interval_s` for a key of the gateway's (so on
a cluster it is the node that owns the gateway's slot that must answer, found again after
a failover); when it answers the state is up at once, and the hook given to `on_recovery`
(the ledger's replay of the records it queued) starts in the background: requests are not
held back by the replay.

On a cluster, "not there" also covers what a cluster answers while a primary is failing
over (CLUSTERDOWN, TRYAGAIN, a slot no node covers, no node reachable): the state is down
for as long as the gateway's slot has no primary, exactly as when a single Redis stops.
A single-Redis client that is redirected (MOVED: the url names a cluster node that does
not own the gateway's slot) is down too, and says how to fix it, rather than counting
every command as refused and dropping the spend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import (
    ClusterError,
    MovedError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tollway.aio import cancel
from tollway.state.base import StateUnavailable
from tollway.state.redis.cluster import BoundedCluster
from tollway.state.redis.connect import async_client, wait_s
from tollway.state.redis.lane import Lane
from tollway.state.redis.script import Script

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from tollway.config.model import StateConfig
    from tollway.observe.metrics import Metrics

log = logging.getLogger("tollway.state.redis")

T = TypeVar("T")
# The errors that mean "Redis is not there" (as opposed to a bug or a refused command);
# OSError covers the builtin TimeoutError too. ClusterError covers CLUSTERDOWN and
# MASTERDOWN (a failover under way) and a redirection loop; RedisClusterException, no
# reachable node or no node for the slot.
DOWN_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, OSError, ClusterError, TryAgainError, MovedError,
    RedisClusterException)
_CHUNK = 500  # commands per pipeline in admin queries


def num(x: float) -> str:
    """A float as an exact decimal string (repr round-trips; redis-py would do the same)."""
    return repr(float(x))


def _lua(name: str) -> str:
    return (resources.files("tollway.state.redis") / "lua" / name).read_text(encoding="utf-8")


class RedisLink:
    def __init__(self, cfg: StateConfig, metrics: Metrics) -> None:
        rc = cfg.redis
        self._metrics = metrics
        self._p = "{" + rc.key_prefix + "}:"
        self._retry_s = rc.retry_interval_s
        # Bounded: a command must answer within timeout_ms; opening a connection and
        # waiting for a free one get at least a second (connect.wait_s). No retries: a
        # failed call fails fast and the probe takes over.
        self.redis: Redis | BoundedCluster = async_client(
            rc, socket_timeout=rc.timeout_ms / 1000, decode_responses=True, bounded=True)
        # Script calls (every request's admit and record) take the lean lane on a single
        # Redis: a pool of their own, as bounded as the client's.
        self.lane = None if isinstance(self.redis, BoundedCluster) else Lane(
            self.redis.connection_pool, max_connections=rc.max_connections,
            wait_s=wait_s(rc), timeout_s=rc.timeout_ms / 1000)
        self._told_moved = False
        self._up = False  # until the probe answers
        self._down = asyncio.Event()
        self._down.set()
        self._probe_task: asyncio.Task[None] | None = None
        self._recovered: Callable[[], None] | None = None

    @property
    def up(self) -> bool:
        """Redis answered last time; while False, hot-path callers fail (or miss) at once."""
        return self._up

    def script(self, name: str) -> Script:
        """A script of tollway/state/redis/lua, run with EVALSHA (EVAL where unknown)."""
        return Script(self.redis, _lua(name), self.lane)

    def inline_script(self, text: str) -> Script:
        """A script given as its text (the tool state's small ones), run the same way."""
        return Script(self.redis, text, self.lane)

    def key(self, *parts: str) -> str:
        return self._p + ":".join(parts)

    def on_recovery(self, recovered: Callable[[], None]) -> None:
        """Call `recovered` each time Redis answers again, once the state is up."""
        self._recovered = recovered

    def count(self, op: str) -> None:
        self._metrics.state_errors.labels(op).inc()

    def mark_down(self, op: str, exc: BaseException) -> None:
        self.count(op)
        if self._up:
            log.warning("redis state down (%s: %r); probing every %ss", op, exc, self._retry_s)
        self._up = False
        self._down.set()

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Try once now; if Redis is not there yet, start down and let the probe retry."""
        if not await self._recover():
            log.warning("redis state unreachable at start; requests run degraded until "
                        "it answers")
        self._probe_task = asyncio.create_task(self._probe(), name="tollway-redis-probe")

    async def stop_probe(self) -> None:
        await cancel(self._probe_task)
        self._probe_task = None

    async def aclose(self) -> None:
        if self.lane is not None:
            await self.lane.aclose()
        await self.redis.aclose()

    async def _probe(self) -> None:
        """While down: PING every retry_interval_s, and on an answer flush and come up."""
        while True:
            await self._down.wait()
            await asyncio.sleep(self._retry_s)
            if self._down.is_set():
                await self._recover()

    async def _recover(self) -> bool:
        try:
            # A key of the gateway's, not PING: the node that must answer is the one that
            # owns the gateway's slot (on a cluster, the client routes it there).
            await self.redis.exists(self.key("probe"))
        except MovedError as exc:
            self.count("probe")
            if not self._told_moved:
                self._told_moved = True
                log.error("state.redis.url is a Redis Cluster node that does not hold this "
                          "gateway's keys (MOVED %s): set state.redis.cluster: true; the "
                          "state stays down until then", exc)
            return False
        except (RedisError, *DOWN_ERRORS):
            self.count("probe")
            return False
        self._up = True
        self._down.clear()
        log.info("redis state up")
        if self._recovered is not None:
            self._recovered()
        return True

    # --- commands -----------------------------------------------------------------------
    async def call(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run an off-hot-path command: failures are counted and raised as StateUnavailable."""
        try:
            return await fn()
        except DOWN_ERRORS as exc:
            self.mark_down(op, exc)
            raise StateUnavailable(f"redis: {exc}") from exc
        except RedisError as exc:
            self.count(op)
            raise StateUnavailable(f"redis: {exc}") from exc

    async def scan(self, match: str, count: int) -> AsyncIterator[str]:
        """SCAN where the gateway's keys are: on a cluster, the node that owns its slot only
        (the client would otherwise scan every primary)."""
        kw: dict[str, Any] = {}
        if isinstance(self.redis, BoundedCluster):
            kw["target_nodes"] = await self.redis.node_of(self.key("probe"))
        async for k in self.redis.scan_iter(match=match, count=count, **kw):
            yield k

    async def pipelined(self, op: str, cmds: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Many reads in pipelines of _CHUNK commands, through `call`."""
        async def run() -> list[Any]:
            out: list[Any] = []
            for i in range(0, len(cmds), _CHUNK):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for name, *cargs in cmds[i:i + _CHUNK]:
                        getattr(pipe, name)(*cargs)
                    out += await pipe.execute()
            return out

        return await self.call(op, run)
