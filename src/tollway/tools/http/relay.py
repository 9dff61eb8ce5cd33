"""The answer: the tool's, relayed whole or streamed and settled on the gate on the way, or
the gateway's own error; and what a tool's HTTP status means for its breaker."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from tollway.errors import GatewayError
from tollway.protocols.base import ERROR_TYPES_OPENAI
from tollway.tools.gate import FAILURE, OK, TOOL_ERROR, Ticket, ToolGate, ToolResult
from tollway.tools.http.tool import HttpTool, _downstream_headers
from tollway.wire import retry_after as parse_retry_after

log = logging.getLogger("tollway.tools.http")

DIGEST_MAX = 1 << 20  # response bodies up to this are kept for the loop detectors


async def relay(gate: ToolGate, request: web.Request, ticket: Ticket, tool: HttpTool,
                upstream: aiohttp.ClientResponse, ours: dict[str, str],
                request_id: str) -> web.StreamResponse:
    status = upstream.status
    outcome = _outcome(status, tool.cfg.fail_on_4xx)
    retry_after = parse_retry_after(upstream.headers) if status in (429, 503) else None
    headers = _downstream_headers(upstream.headers)
    headers.update(ours)
    length = upstream.content_length
    head = request.method.upper() == "HEAD"
    checks = gate.guardrails
    if checks is not None and not checks.applies("tool_results", ticket.caller, tool.name):
        checks = None
    small = length is not None and length <= DIGEST_MAX
    if checks is not None and length is not None and not small:
        ticket.flags.append("guardrail:unscanned")  # streamed through, not looked at
    # whole: what can be kept for the loop detectors, and a chunked answer the guardrails
    # must read before the agent does
    if head or small or (checks is not None and length is None):
        return await _whole(gate, ticket, tool, upstream, headers, outcome, retry_after,
                            request_id, head)
    response = web.StreamResponse(status=status, reason=upstream.reason, headers=headers)
    if length is not None:
        response.content_length = length
    keep: list[bytes] | None = []
    kept = 0
    gone = False
    cut: str | None = None
    ended = False  # the loop below ran to its end (not torn down by a cancellation)
    settled_status = status
    try:
        try:
            await response.prepare(request)
        except ConnectionError:
            gone = True
        if not gone:
            try:
                async for chunk in upstream.content.iter_any():
                    if keep is not None:
                        kept += len(chunk)
                        if kept <= DIGEST_MAX:
                            keep.append(chunk)
                        else:
                            keep = None
                    try:
                        await response.write(chunk)
                    except ConnectionError:
                        gone = True
                        break
            except TimeoutError:
                cut = "timeout"
            except aiohttp.ClientError:
                cut = "dropped"
        ended = True
    finally:
        if ended and cut is None and not gone:
            upstream.release()
        else:
            upstream.close()  # the tool stops sending
    if gone:
        settled_status = 499  # as nginx logs it: the client closed the request
    elif cut is not None:
        settled_status = 504 if cut == "timeout" else 502
        outcome = FAILURE
        log.warning("tool stream cut", extra={"fields": {
            "tool": tool.name, "request_id": request_id, "reason": cut}})
    result = (ToolResult(b"".join(keep))
              if keep is not None and not gone and cut is None else None)
    await gate.settle(ticket, settled_status, outcome, result,
                      retry_after_s=retry_after if outcome == FAILURE else None)
    if cut is not None:
        # No clean end: the caller must see that the body is incomplete.
        if request.transport is not None:
            request.transport.close()
        return response
    if not gone:
        try:
            await response.write_eof()
        except ConnectionError:
            pass
    return response


async def _whole(gate: ToolGate, ticket: Ticket, tool: HttpTool,
                 upstream: aiohttp.ClientResponse, headers: CIMultiDict[str], outcome: str,
                 retry_after: float | None, request_id: str, head: bool) -> web.StreamResponse:
    """A small answer: read it, settle, then send it."""
    try:
        payload = await upstream.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        upstream.close()
        timeout = isinstance(exc, TimeoutError)
        err = (GatewayError(504, "tool_timeout", f"tool {tool.name!r} did not finish "
                            f"its answer within {tool.cfg.timeout_s:g}s") if timeout else
               GatewayError(502, "tool_unreachable", f"tool {tool.name!r} dropped the "
                            f"connection mid-answer ({type(exc).__name__})"))
        await gate.settle(ticket, err.status, FAILURE, None)
        return error_response(err, request_id, tool.name,
                              {k: v for k, v in headers.items() if k.startswith("x-tollway")})
    finally:
        upstream.release()
    blocked: GatewayError | None = None
    checks = gate.guardrails
    if payload and checks is not None and checks.applies("tool_results", ticket.caller,
                                                         tool.name):
        try:
            payload, found = await checks.check_bytes("tool_results", ticket.caller,
                                                      ticket.session, request_id, tool.name,
                                                      payload, ticket.flags)
        except GatewayError as err:  # the call was made (and is charged); its answer is not
            blocked, found = err, ""
        if found:
            headers["x-tollway-guardrail"] = found
    await gate.settle(ticket, upstream.status, outcome, ToolResult(payload),
                      retry_after_s=retry_after if outcome == FAILURE else None)
    if blocked is not None:
        return error_response(blocked, request_id, tool.name,
                              {k: v for k, v in headers.items() if k.startswith("x-tollway")})
    if head and upstream.content_length is not None:
        headers["Content-Length"] = str(upstream.content_length)  # what a GET would get
    response = web.Response(status=upstream.status, reason=upstream.reason,
                            headers=headers)
    if payload:
        response.body = payload
    return response


def error_response(err: GatewayError, request_id: str, tool: str | None,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    h = {**(headers or {}), "x-tollway-request-id": request_id, **err.headers}
    if tool is not None:
        h.setdefault("x-tollway-tool", tool)
    if err.retry_after is not None:
        h["Retry-After"] = str(max(1, round(err.retry_after)))
    body = {"error": {"message": err.message,
                      "type": ERROR_TYPES_OPENAI.get(err.status, "api_error"),
                      "code": err.code, "tool": tool}}
    return web.Response(status=err.status, body=orjson.dumps(body), headers=h,
                        content_type="application/json")


def _outcome(status: int, fail_on_4xx: bool) -> str:
    if status >= 500 or status == 429:
        return FAILURE
    if status >= 400:
        return FAILURE if fail_on_4xx else TOOL_ERROR
    return OK
