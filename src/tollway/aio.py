"""Small asyncio pieces every long-lived part of the gateway shares."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel background tasks and wait until they have ended, so that what they hold (a
    connection, a file) is let go before the caller closes it. None is skipped."""
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    for task in live:
        with contextlib.suppress(asyncio.CancelledError):
            await task
