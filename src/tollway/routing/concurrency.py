"""A cap on concurrent upstream requests, with a bounded first-come-first-served queue."""

from __future__ import annotations

import asyncio
from collections import deque

from tollway.config.model import ConcurrencyLimit
from tollway.errors import GatewayError


class Limiter:
    def __init__(self, target: str, cfg: ConcurrencyLimit) -> None:
        self.target = target
        self.max = cfg.max
        self.queue = cfg.queue
        self.timeout = cfg.queue_timeout_s
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.active < self.max and not self._waiters:
            self.active += 1
            return
        if len(self._waiters) >= self.queue:
            raise GatewayError(503, "overloaded",
                               f"{self.target}: {self.active} requests in flight and "
                               f"{len(self._waiters)} waiting; try again shortly", retry_after=1)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.timeout)
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot arrived just as we gave up: pass it on
            else:
                fut.cancel()
            raise GatewayError(503, "overloaded",
                               f"{self.target}: no upstream slot within {self.timeout:.0f}s",
                               retry_after=1) from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()
            else:
                fut.cancel()
            raise
        finally:
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the slot over; active stays the same
                return
        self.active -= 1
