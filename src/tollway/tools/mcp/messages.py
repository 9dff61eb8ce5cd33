"""JSON-RPC messages: read and written as the server would (integers beyond 64 bits too), ids
as keys, and the gateway's errors as JSON-RPC errors with their codes."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from tollway.errors import GatewayError
from tollway.protocols.inputs import MAX_DEPTH, too_deep

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
    """A server's JSON, or None. The standard library backs orjson up, so an answer the
    client could read is passed on whatever orjson thinks of it."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


class RpcRefusal(Exception):
    """A client's body that is not JSON-RPC: HTTP 400 with this JSON-RPC error."""

    def __init__(self, code: int, message: str, rpc_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.rpc_id = rpc_id

    def body(self) -> dict[str, Any]:
        return _plain_error(self.rpc_id, self.code, self.message)


def parse_client(raw: bytes) -> Any:
    """A client's JSON-RPC message or batch, read strictly: orjson alone (it refuses what a
    server may choke on: lone surrogates, NaN, invalid UTF-8), at most MAX_DEPTH deep, each
    message an object of JSON-RPC 2.0 with a method (or a result or error, answering the
    server) and a string or numeric id. Raises RpcRefusal."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise RpcRefusal(_PARSE_ERROR, _TOO_DEEP) from exc
        raise RpcRefusal(_PARSE_ERROR, f"Parse error: the body is not valid JSON ({exc})",
                         ) from exc
    if too_deep(parsed, MAX_DEPTH):
        raise RpcRefusal(_PARSE_ERROR, _TOO_DEEP)
    if isinstance(parsed, list):
        if not parsed:
            raise RpcRefusal(_INVALID_REQUEST, "Invalid Request: an empty batch")
        for msg in parsed:
            _check_message(msg)
    else:
        _check_message(parsed)
    return parsed


_TOO_DEEP = f"Parse error: the body is nested deeper than {MAX_DEPTH} levels"
_ID_TYPES = (str, int, float, type(None))


def _check_message(msg: Any) -> None:
    if not isinstance(msg, dict):
        raise RpcRefusal(_INVALID_REQUEST, "Invalid Request: a message must be an object")
    rpc_id = msg.get("id")
    if type(rpc_id) not in _ID_TYPES:
        raise RpcRefusal(_INVALID_REQUEST, "Invalid Request: id must be a string or a number")
    if msg.get("jsonrpc") != "2.0":
        raise RpcRefusal(_INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', rpc_id)
    method = msg.get("method")
    if method is None and ("result" in msg or "error" in msg) and "id" in msg:
        return  # the client answering a request of the server's
    if not isinstance(method, str):
        raise RpcRefusal(_INVALID_REQUEST, "Invalid Request: method must be a string", rpc_id)
    params = msg.get("params")
    if params is not None and not isinstance(params, dict | list):
        raise RpcRefusal(_INVALID_REQUEST, "Invalid Request: params must be an object or an "
                         "array", rpc_id)


def _dumps(obj: Any, canonical: bool = False) -> bytes:
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS if canonical else 0)
    except (orjson.JSONEncodeError, TypeError):
        text = json.dumps(obj, sort_keys=canonical, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate a server sent: escaped as it came
        return json.dumps(obj, sort_keys=canonical, separators=(",", ":")).encode()


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

