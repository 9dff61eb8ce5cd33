"""The body of POST /admin/approvals/{id}, read strictly: one bad body is a 400 in the admin
API's shape, never an exception in the handler."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tollway.admin.bodies import read_object
from tollway.config.server import ServerConfig
from tollway.errors import GatewayError
from tollway.protocols.inputs import wrong_type

USAGE = '{"decision": "approve"|"reject", "reason": "...", "by": "..."}'


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, "bad_decision", message, param=param)


async def read_decision(request: web.Request, server: ServerConfig) -> dict[str, Any]:
    """{"decision", "reason", "by"} with their types checked; GatewayError otherwise."""
    body = await read_object(request, server, USAGE, _bad)
    if body.get("decision") not in ("approve", "reject"):
        raise _bad('decision must be "approve" or "reject"', "decision")
    for key in ("reason", "by"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            err = wrong_type(key, "a string", value)
            raise _bad(err.message, key)
    return body
