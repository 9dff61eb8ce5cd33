"""The one connection every Redis facet shares, and whether Redis is there at all.

`RedisLink` owns the bounded connection pool, the key prefix (`key()`), the up/down state
and the background probe. Facets run their off-hot-path commands through `call()`, which
counts failures in tollway_state_errors_total{op} and raises them as StateUnavailable; a
connection failure (not a refused command) also marks the state down. While down, a probe
PINGs every `retry_interval_s`; when Redis answers the state is up at once, and the hook
given to `on_recovery` (the ledger's replay of the records it queued) starts in the
background: requests are not held back by the replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tollway.state.base import StateUnavailable

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from tollway.config.model import StateConfig
    from tollway.observe.metrics import Metrics

log = logging.getLogger("tollway.state.redis")

T = TypeVar("T")
# The errors that mean "Redis is not there" (as opposed to a bug or a refused command);
# OSError covers the builtin TimeoutError too.
DOWN_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
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
        timeout = rc.timeout_ms / 1000
        # Bounded pool. A command must answer within `timeout`; opening a connection and
        # waiting for a free one get at least a second, so that a burst of new requests on
        # a busy machine (dozens of connections opened at once) is not mistaken for Redis
        # being down. No retries: a failed call fails fast and the probe takes over.
        slack = max(1.0, 4 * timeout)
        pool = BlockingConnectionPool.from_url(
            rc.url, max_connections=rc.max_connections, timeout=slack,
            socket_timeout=timeout, socket_connect_timeout=slack, protocol=2,
            decode_responses=True, retry=Retry(NoBackoff(), 0))
        self.redis: Redis = Redis.from_pool(pool)
        self._up = False  # until a PING answers
        self._down = asyncio.Event()
        self._down.set()
        self._probe_task: asyncio.Task[None] | None = None
        self._recovered: Callable[[], None] | None = None

    @property
    def up(self) -> bool:
        """Redis answered last time; while False, hot-path callers fail (or miss) at once."""
        return self._up

    def script(self, name: str) -> AsyncScript:
        """A script of tollway/state/redis/lua, run with EVALSHA (loaded on first use)."""
        return self.redis.register_script(_lua(name))

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
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None

    async def aclose(self) -> None:
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
            await self.redis.ping()
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
