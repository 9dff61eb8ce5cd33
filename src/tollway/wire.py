"""Small pieces of HTTP every proxy path shares: writing to a client that may have gone away,
JSON answers, and reading an upstream's Retry-After."""

from __future__ import annotations

import math
from collections.abc import Mapping

import orjson
from aiohttp import web


async def prepare_client(response: web.StreamResponse, request: web.Request) -> bool:
    """Send the status and headers; False when the client has gone away."""
    try:
        await response.prepare(request)
    except ConnectionError:
        return False
    return True


async def write_client(response: web.StreamResponse, data: bytes) -> bool:
    """Write to the client; False when it has gone away."""
    try:
        await response.write(data)
    except ConnectionError:
        return False
    return True


def json_response(data: object, status: int = 200, headers: dict[str, str] | None = None,
                  ) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a Retry-After header in its delay-seconds form. None when it is
    absent or not a usable delay: negative, not a finite number, or an HTTP-date (a clock
    we do not share; the breaker and backoff use their own timing then)."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
