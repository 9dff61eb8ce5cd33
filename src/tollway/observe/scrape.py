"""GET /metrics: the Prometheus exposition, served by the admin listener and, while
`server.metrics_on_main` is on (or the admin listener is off), by the main port too."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from tollway.gateway import Gateway


def metrics_handler(gw: Gateway) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The /metrics handler for either listener: both read the one registry of the process
    (in multiprocess mode, every worker's files, merged)."""
    async def metrics(request: web.Request) -> web.Response:
        m = gw.metrics
        if m.multiprocess:  # reads and merges every worker's files: off the event loop
            body = await asyncio.get_running_loop().run_in_executor(None, m.exposition)
        else:
            body = m.exposition()
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})
    return metrics
