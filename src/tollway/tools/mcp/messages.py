"""JSON-RPC messages: read and written as the server would (integers beyond 64 bits too), ids
as keys, and the gateway's errors as JSON-RPC errors with their codes."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from tollway.errors import GatewayError

RPC_CODES: dict[str, int] = {
    "invalid_api_key": -32051, "key_expired": -32051, "unknown_agent": -32051,
    "policy_denied": -32052,
    "loop_detected": -32053,
    "breaker_open": -32054,
    "budget_exceeded": -32055, "rate_limit_exceeded": -32055,
    "state_unavailable": -32056,
    "upstream_error": -32057,
    "upstream_timeout": -32058,
    "unknown_mcp_server": -32059,
}
RPC_GATEWAY_ERROR = -32050
_INTERNAL_ERROR = -32603  # a server's JSON-RPC internal error: counts as a failure
_PARSE_ERROR, _INVALID_REQUEST, _INVALID_PARAMS = -32700, -32600, -32602


def _loads(raw: bytes) -> Any:
    """JSON, or None. The standard library backs orjson up (integers beyond 64 bits), so a
    body the server could read is never one the gateway could not."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _dumps(obj: Any, canonical: bool = False) -> bytes:
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS if canonical else 0)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(obj, sort_keys=canonical, separators=(",", ":"),
                          ensure_ascii=False).encode()


def _key(rpc_id: Any) -> bytes:
    """A JSON-RPC id as a dict key: 1 and "1" are different ids."""
    return _dumps(rpc_id)


def rpc_error(rpc_id: Any, err: GatewayError, tool: str | None = None) -> dict[str, Any]:
    """A gateway error as the JSON-RPC error response to request `rpc_id`."""
    data: dict[str, Any] = {"tollway_code": err.code}
    if tool is not None:
        data["tool"] = tool
    if err.retry_after is not None:
        data["retry_after_s"] = round(float(err.retry_after), 3)
    return {"jsonrpc": "2.0", "id": rpc_id, "error": {
        "code": RPC_CODES.get(err.code, RPC_GATEWAY_ERROR), "message": err.message,
        "data": data}}


def _plain_error(rpc_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}}


def _json(status: int, body: Any, headers: CIMultiDict[str] | None = None) -> web.Response:
    h: CIMultiDict[str] = CIMultiDict(headers or {})
    h["Content-Type"] = "application/json"
    return web.Response(status=status, body=_dumps(body), headers=h)

