"""The body of POST /admin/approvals/{id}, read strictly: one bad body is a 400 in the admin
API's shape, never an exception in the handler."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tollway.config.server import ServerConfig
from tollway.errors import GatewayError
from tollway.ingress.body import read_body
from tollway.protocols.inputs import MAX_DEPTH, too_deep, wrong_type

USAGE = '{"decision": "approve"|"reject", "reason": "...", "by": "..."}'


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, "bad_decision", message, param=param)


async def read_decision(request: web.Request, server: ServerConfig) -> dict[str, Any]:
    """{"decision", "reason", "by"} with their types checked; GatewayError otherwise."""
    raw = await read_body(request, int(server.max_body_mb * 2**20))
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the body must be JSON: {USAGE}") from exc
    if not isinstance(body, dict):
        raise _bad(f"the body must be a JSON object: {USAGE}")
    if too_deep(body, MAX_DEPTH):
        raise _bad(f"the body is nested deeper than {MAX_DEPTH} levels")
    if body.get("decision") not in ("approve", "reject"):
        raise _bad('decision must be "approve" or "reject"', "decision")
    for key in ("reason", "by"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            err = wrong_type(key, "a string", value)
            raise _bad(err.message, key)
    return body
