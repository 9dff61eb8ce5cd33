"""Reading an admin request's JSON body strictly: one bad body is a 400 in the admin API's
shape (the caller's `bad` says which code), never an exception in the handler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from tollway.config.server import ServerConfig
from tollway.errors import GatewayError
from tollway.ingress.body import read_body
from tollway.protocols.inputs import MAX_DEPTH, too_deep

Bad = Callable[[str], GatewayError]


async def read_object(request: web.Request, server: ServerConfig, usage: str, bad: Bad,
                      empty_ok: bool = False) -> dict[str, Any]:
    raw = await read_body(request, int(server.max_body_mb * 2**20))
    if empty_ok and not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad(f"the body must be JSON: {usage}") from exc
    if not isinstance(body, dict):
        raise bad(f"the body must be a JSON object: {usage}")
    if too_deep(body, MAX_DEPTH):
        raise bad(f"the body is nested deeper than {MAX_DEPTH} levels")
    return body
