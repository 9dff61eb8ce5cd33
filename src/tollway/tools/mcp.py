"""MCP servers over Streamable HTTP: POST/GET/DELETE /mcp/<server> proxied.

The session passes through as the server speaks it: JSON-RPC bodies (one message or a
batch), answers as one JSON body or as an SSE stream (`event: message`, several messages in
one stream: progress notifications before the response), the standalone GET stream, DELETE,
and the `Mcp-Session-Id` / `MCP-Protocol-Version` headers both ways. The caller's virtual
key (Authorization: Bearer / x-api-key) identifies the agent and is never forwarded; the
server's configured `headers:` (its credentials) are added instead.

Two kinds of message are read on the way:

- `tools/call` (tool = params.name, "<server>/<tool>" for policies, key limits, breakers
  and metrics) goes through the tool gate before it is forwarded, and its answer, found in
  the JSON body or in the stream's message with the same id, settles it: a result is `ok`,
  or `tool_error` when it is `isError: true` (a failure for the breaker only with
  `fail_on_error`); a JSON-RPC error from the server is `tool_error` (unknown tool, bad
  arguments: the server refused the call) except -32603 (internal error), a failure; HTTP
  5xx, a transport error, a timeout or a stream that ends without the answer are failures.
  A tool's cost is charged when it answered with a result.
- `tools/list` answers are rewritten to the tools the calling agent may call.

A call the gate refuses is answered at once, HTTP 200, with a JSON-RPC error for its id;
`error.data` is {"tollway_code", "tool", "retry_after_s"?}. While a tool's breaker is open
its configured fallback (a tool of the same server) is called with the same arguments.
JSON-RPC error codes (the implementation-defined server-error range):

    -32050  any other gateway refusal
    -32051  invalid_api_key, key_expired, unknown_agent: who is calling
    -32052  policy_denied: policies, key limits, kill switch, a rejected approval
    -32053  loop_detected: the same call returned the same result N times in the session
    -32054  breaker_open: the tool is failing; data.retry_after_s says when it is retried
    -32055  budget_exceeded, rate_limit_exceeded
    -32056  state_unavailable (fail-closed state)
    -32057  upstream_error: the MCP server is unreachable, dropped the stream or answered 5xx
    -32058  upstream_timeout: the MCP server did not answer within `timeout_s`
    -32059  unknown_mcp_server (HTTP 404)

Errors about the HTTP exchange itself (unknown server, bad key, unreachable server) carry
the same JSON-RPC error body with the HTTP status (404, 401, 502, 504), which MCP clients
surface as the request's error; so do a tool's failures (502, 504), or, once an SSE answer
has begun, an error message as the stream's last event.

The gate's session is the MCP session (`Mcp-Session-Id`, hashed with the server's name) unless
a trusted x-tollway-session names one; 2026-07-28 requests carry no session, so their calls
share the agent's tool session. A client that goes away mid-stream leaves its call settled as
`cancelled`: charged (it was made) but not counted on the breaker. A stream the server closes
to be resumed (SSE polling) keeps its calls open until a GET with Last-Event-ID in the same
session brings the answers, or `timeout_s` passes (a failure). Batches (before 2025-06-18) are
handled message by message: refused calls are answered by the gateway alongside the server's
answers to the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from tollway.config.model import Config
from tollway.config.tools import McpServerConfig
from tollway.errors import GatewayError
from tollway.exchange import Caller
from tollway.observe.metrics import Metrics
from tollway.tools.gate import (
    FAILURE,
    OK,
    TOOL_ERROR,
    Ticket,
    ToolGate,
    ToolTarget,
    breaker_policy,
    call_digest,
    result_digest,
)
from tollway.wire import prepare_client, retry_after, write_client

log = logging.getLogger("tollway.tools.mcp")

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

_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                  "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
                  "upgrade", "content-length", "host"})
# The caller's credentials and the gateway's own headers stay here; aiohttp negotiates its
# own encoding with the server and hands over plain bytes.
_DROP_IN = _HOP | {"authorization", "x-api-key", "accept-encoding"}
_DROP_OUT = _HOP | {"content-encoding", "date", "server"}
_MAX_TARGETS = 10_000
_SUMMARY_CHARS = 300


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


def _sse_message(msg: Any) -> bytes:
    return b"event: message\ndata: " + _dumps(msg) + b"\n\n"


class _Events:
    """Splits an SSE byte stream into events, whatever the line ends (CRLF, LF, CR) and
    wherever the network cut it. Events come back without their blank-line terminator."""

    __slots__ = ("buf", "saw_id")

    def __init__(self) -> None:
        self.buf = b""
        self.saw_id = False  # an event carried an id: the stream is resumable

    def feed(self, chunk: bytes, last: bool = False) -> list[bytes]:
        buf = self.buf + chunk if self.buf else chunk
        tail = b""
        if b"\r" in buf:
            if buf.endswith(b"\r") and not last:  # maybe the first half of a CRLF
                buf, tail = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.buf = buf + tail
            return []
        self.buf = buf[end + 2:] + tail
        out = [e for e in buf[:end].split(b"\n\n") if e.strip(b"\n")]
        if not self.saw_id and b"id:" in buf[:end]:
            self.saw_id = any(line.startswith(b"id:") and line[3:].strip()
                              for e in out for line in e.split(b"\n"))
        return out

    def finish(self) -> tuple[list[bytes], bytes]:
        """At the end of the stream: the last complete events, and an unterminated rest."""
        events = self.feed(b"", last=True)
        rest, self.buf = self.buf, b""
        return events, rest


def _event_data(event: bytes) -> tuple[bytes | None, bytes | None]:
    """The event's name (None: "message") and its joined data (None: no data lines)."""
    name = None
    data: list[bytes] | None = None
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            (data := data if data is not None else []).append(
                line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return name, (b"\n".join(data) if data is not None else None)


def _with_data(event: bytes, payload: bytes) -> bytes:
    """The event with its data replaced (its name, id and retry kept)."""
    kept = [line for line in event.split(b"\n") if not line.startswith(b"data:")]
    return b"\n".join([*kept, b"data: " + payload])


@dataclass(slots=True)
class _Pending:
    """A request the gateway waits to see answered: a gated tools/call or a tools/list."""

    kind: str  # "call" | "list"
    caller: Caller
    server: str
    ticket: Ticket | None = None
    rpc_id: Any = None

    @property
    def tool(self) -> str | None:
        return self.ticket.tool.name if self.ticket is not None else None


@dataclass(slots=True)
class _Exchange:
    """One POST (or a resumed stream): what it waits for, and what it refused up front."""

    server: str
    srv: McpServerConfig
    pending: dict[bytes, _Pending] = field(default_factory=dict)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None

    @property
    def calls(self) -> list[_Pending]:
        return [p for p in self.pending.values() if p.kind == "call"]


class McpProxy:
    def __init__(self, cfg: Config, gate: ToolGate, metrics: Metrics) -> None:
        self.cfg = cfg
        self.gate = gate
        self.metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self._targets: dict[tuple[str, str], ToolTarget] = {}
        # Answers still owed on streams the server closed to be resumed (SSE polling): a GET
        # with Last-Event-ID in the same MCP session delivers them. Key: server, session id.
        self._parked: dict[tuple[str, str], _Exchange] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()

    # --- plumbing ------------------------------------------------------------------------
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                auto_decompress=True, trust_env=False)
        return self._session

    async def close(self) -> None:
        for key, ex in list(self._parked.items()):
            self._parked.pop(key, None)
            await self._settle_unanswered(ex, "cancelled", 499)
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _request_id(self) -> str:
        return f"mcp_{self._id_prefix}{next(self._ids):08x}"

    def target(self, server: str, srv: McpServerConfig, tool: str) -> ToolTarget:
        """The gate's view of one tool of a server: the server's settings, overridden by the
        tool's entry under `tools:`."""
        found = self._targets.get((server, tool))
        if found is not None:
            return found
        tc = srv.tools.get(tool)
        cost = tc.cost_usd if tc is not None and tc.cost_usd is not None else srv.cost_usd
        foe = (tc.fail_on_error if tc is not None and tc.fail_on_error is not None
               else srv.fail_on_error)
        breaker = tc.breaker if tc is not None and tc.breaker is not None else srv.breaker
        t = ToolTarget(name=f"{server}/{tool}", server=server, cost_usd=cost,
                       breaker=breaker_policy(breaker), fail_on_error=foe,
                       fallback=tc.fallback if tc is not None else None)
        if len(self._targets) < _MAX_TARGETS:
            self._targets[(server, tool)] = t
        return t

    def _upstream_headers(self, request: web.Request, srv: McpServerConfig,
                          ) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict()
        for k, v in request.headers.items():
            lk = k.lower()
            if lk in _DROP_IN or lk.startswith("x-tollway-"):
                continue
            out.add(k, v)
        for k, v in srv.headers.items():
            out[k] = v
        return out

    @staticmethod
    def _client_headers(upstream: aiohttp.ClientResponse, rid: str) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict()
        for k, v in upstream.headers.items():
            if k.lower() not in _DROP_OUT:
                out.add(k, v)
        out["x-tollway-request-id"] = rid
        return out

    async def _send(self, method: str, request: web.Request, srv: McpServerConfig,
                    headers: CIMultiDict[str], body: bytes | None,
                    long_lived: bool = False) -> aiohttp.ClientResponse:
        url = srv.url + (f"?{request.query_string}" if request.query_string else "")
        timeout = aiohttp.ClientTimeout(total=None, connect=srv.connect_timeout_s,
                                        sock_connect=srv.connect_timeout_s,
                                        sock_read=None if long_lived else srv.timeout_s)
        return await self.session.request(method, url, headers=headers, data=body or None,
                                          timeout=timeout, allow_redirects=False)

    def _transport_error(self, server: str, exc: BaseException) -> GatewayError:
        if isinstance(exc, TimeoutError):
            self.metrics.upstream_errors.labels(server, "timeout").inc()
            return GatewayError(504, "upstream_timeout",
                                f"MCP server {server!r} did not answer in time")
        self.metrics.upstream_errors.labels(server, "unreachable").inc()
        return GatewayError(502, "upstream_error", f"MCP server {server!r} is unreachable or "
                            f"dropped the connection ({type(exc).__name__})")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- entry -----------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["server"]
        rid = self._request_id()
        body = await request.read() if request.method == "POST" else b""
        parsed = _loads(body) if body else None
        single_id = parsed.get("id") if isinstance(parsed, dict) else None
        srv = self.cfg.mcp_servers.get(name)
        if srv is None:
            known = ", ".join(sorted(self.cfg.mcp_servers)) or "none"
            return _json(404, rpc_error(single_id, GatewayError(
                404, "unknown_mcp_server",
                f"no MCP server named {name!r} is configured (known: {known})")))
        try:
            caller = self.gate.identity.resolve(request.headers)
        except GatewayError as err:
            return _json(err.status, rpc_error(single_id, err))
        if request.method == "POST":
            if parsed is None or not isinstance(parsed, dict | list) or parsed == []:
                return _json(400, _plain_error(None, _PARSE_ERROR if parsed is None else
                                               _INVALID_REQUEST,
                                               "the body is not a JSON-RPC message or batch"))
            return await self._post(request, name, srv, caller, rid, body, parsed)
        if request.method == "GET":
            return await self._get(request, name, srv, caller, rid)
        return await self._plain(request, name, srv, rid)

    # --- tools/call admission --------------------------------------------------------------
    def _gate_session(self, request: web.Request, server: str, caller: Caller) -> str:
        sid = request.headers.get("Mcp-Session-Id")
        default = None
        if sid:
            default = "mcp-" + hashlib.blake2b(f"{server}\0{sid}".encode(),
                                               digest_size=8).hexdigest()
        return self.gate.session(request.headers, caller, default)

    async def _admit(self, ex: _Exchange, msg: dict[str, Any], caller: Caller, session: str,
                     rid: str) -> tuple[Ticket | None, dict[str, Any] | None]:
        """(ticket, None) to forward `msg` (its name rewritten to a fallback, maybe), or
        (None, the JSON-RPC error to answer)."""
        rpc_id = msg.get("id")
        params = msg.get("params")
        tool = params.get("name") if isinstance(params, dict) else None
        if not isinstance(tool, str) or not tool:
            return None, _plain_error(rpc_id, _INVALID_PARAMS,
                                      "tools/call needs params.name, the tool's name")
        args = params.get("arguments")  # type: ignore[union-attr]
        canon = _dumps(args if args is not None else {}, canonical=True)
        target = self.target(ex.server, ex.srv, tool)
        summary = f"{target.name} {canon[:_SUMMARY_CHARS].decode('utf-8', 'replace')}"
        try:
            ticket = await self.gate.admit(caller, session, target,
                                           call_digest(target.name, canon), rid, summary)
            return ticket, None
        except GatewayError as err:
            if err.code != "breaker_open" or not target.fallback:
                return None, rpc_error(rpc_id, err, target.name)
            refused = err
        fb = self.target(ex.server, ex.srv, target.fallback)
        try:
            ticket = await self.gate.admit(caller, session, fb, call_digest(fb.name, canon), rid,
                                           f"{fb.name} {summary[len(target.name) + 1:]}")
        except GatewayError as err:
            refused.message += (f"; its fallback {fb.name!r} was refused too: "
                                f"{err.message}")
            return None, rpc_error(rpc_id, refused, target.name)
        msg["params"] = {**params, "name": target.fallback}  # type: ignore[dict-item]
        log.info("MCP tool call sent to its fallback", extra={"fields": {
            "tool": target.name, "fallback": fb.name, "agent": caller.agent,
            "request_id": rid}})
        return ticket, None

    # --- POST ------------------------------------------------------------------------------
    async def _post(self, request: web.Request, server: str, srv: McpServerConfig, caller: Caller,
                    rid: str, body: bytes, parsed: Any) -> web.StreamResponse:
        batch = isinstance(parsed, list)
        msgs: list[Any] = parsed if batch else [parsed]
        ex = _Exchange(server, srv)
        session = self._gate_session(request, server, caller)
        forward: list[Any] = []
        changed = False
        fallback_name: str | None = None
        try:
            for m in msgs:
                method = m.get("method") if isinstance(m, dict) else None
                if method == "tools/call":
                    if "id" not in m:  # a notification cannot be answered, nor gated
                        changed = True
                        continue
                    k = _key(m["id"])
                    if k in ex.pending:
                        ex.refusals.append(_plain_error(m["id"], _INVALID_REQUEST,
                                                        "two requests in a batch share an id"))
                        changed = True
                        continue
                    asked = (m.get("params") or {}).get("name") if isinstance(
                        m.get("params"), dict) else None
                    ticket, refusal = await self._admit(ex, m, caller, session, rid)
                    if ticket is None:
                        ex.refusals.append(refusal)  # type: ignore[arg-type]
                        changed = True
                        continue
                    if m["params"]["name"] != asked:
                        changed = True
                        fallback_name = m["params"]["name"]
                    ex.pending[k] = _Pending("call", caller, server, ticket, m["id"])
                elif method == "tools/list" and "id" in m:
                    ex.pending.setdefault(_key(m["id"]), _Pending("list", caller, server,
                                                                  rpc_id=m["id"]))
                forward.append(m)
        except BaseException:
            await self._release(ex)
            raise
        if not forward and not ex.refusals:  # only tools/call notifications, dropped
            return web.Response(status=202, headers={"x-tollway-request-id": rid})
        if not forward:  # every request was refused: answer here
            return _json(200, ex.refusals if batch else ex.refusals[0],
                         CIMultiDict({"x-tollway-request-id": rid}))
        payload = (_dumps(forward if batch else forward[0]) if changed else body)
        headers = self._upstream_headers(request, srv)
        if fallback_name is not None and not batch and "Mcp-Name" in headers:
            headers["Mcp-Name"] = fallback_name  # the 2026 wire mirrors params.name
        try:
            upstream = await self._send("POST", request, srv, headers, payload)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return await self._fail_post(ex, forward, batch, self._transport_error(server, exc),
                                         rid)
        except BaseException:
            await self._release(ex)
            raise
        ctype = upstream.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if upstream.status >= 500 and ex.calls:
                retry = retry_after(upstream.headers)
                upstream.close()
                err = GatewayError(502, "upstream_error",
                                   f"MCP server {server!r} answered HTTP {upstream.status}",
                                   retry_after=retry)
                return await self._fail_post(ex, forward, batch, err, rid, upstream.status,
                                             retry)
            if ctype == "text/event-stream":
                if not ex.pending and not ex.refusals:
                    return await self._passthrough(request, upstream, rid)
                return await self._relay_sse(request, upstream, ex, rid)
            return await self._whole(upstream, ex, batch, forward, rid)
        except asyncio.CancelledError:
            self._abandon(ex)
            raise

    async def _release(self, ex: _Exchange) -> None:
        for p in ex.calls:
            await self.gate.release(p.ticket)  # type: ignore[arg-type]

    async def _fail_post(self, ex: _Exchange, forward: list[Any], batch: bool,
                         err: GatewayError, rid: str, status: int | None = None,
                         retry_after_s: float | None = None) -> web.Response:
        """The server did not answer (or answered 5xx): every forwarded request gets the
        error, naming its tool; the calls count as failures."""
        answers = list(ex.refusals)
        for m in forward:
            if not isinstance(m, dict) or "id" not in m or "method" not in m:
                continue
            p = ex.pending.get(_key(m["id"]))
            tool = p.tool if p is not None else None
            e = err
            if tool is not None:
                e = GatewayError(err.status, err.code, f"tool {tool!r}: {err.message}",
                                 retry_after=err.retry_after)
            answers.append(rpc_error(m["id"], e, tool))
        for p in ex.calls:
            await self.gate.settle(p.ticket, status or err.status, FAILURE,  # type: ignore[arg-type]
                                   None, retry_after_s=retry_after_s, charged=False)
        ex.pending.clear()
        body: Any = answers if batch else (answers[0] if answers else
                                          rpc_error(None, err))
        return _json(err.status, body, CIMultiDict({"x-tollway-request-id": rid}))

    # --- answers -------------------------------------------------------------------------
    def _filter_tools(self, p: _Pending, msg: dict[str, Any]) -> dict[str, Any] | None:
        result = msg.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            return None
        may = self.gate.identity.may_call
        kept = [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
                and may(p.caller, f"{p.server}/{t['name']}")]
        if len(kept) == len(tools):
            return None
        return {**msg, "result": {**result, "tools": kept}}  # type: ignore[dict-item]

    async def _settle_answer(self, p: _Pending, msg: dict[str, Any], status: int) -> None:
        ticket = p.ticket
        assert ticket is not None
        if "result" in msg:
            result = msg["result"]
            is_error = isinstance(result, dict) and result.get("isError") is True
            outcome = (FAILURE if ticket.tool.fail_on_error else TOOL_ERROR) if is_error else OK
            if isinstance(result, dict):  # _meta may carry per-call noise (ids, timings)
                result = {k: v for k, v in result.items() if k != "_meta"}
            await self.gate.settle(ticket, status, outcome,
                                   result_digest(_dumps(result, canonical=True)))
            return
        error = msg.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        if code == _INTERNAL_ERROR:
            await self.gate.settle(ticket, status, FAILURE, None, charged=False)
        else:
            await self.gate.settle(ticket, status, TOOL_ERROR,
                                   result_digest(_dumps({"error": error}, canonical=True)),
                                   charged=False)

    async def _on_messages(self, ex: _Exchange, msgs: list[Any], status: int,
                           ) -> list[Any] | None:
        """Settle the calls these messages answer, filter the tool lists; the messages to
        pass on, or None when none changed."""
        out: list[Any] | None = None
        for i, m in enumerate(msgs):
            if not (isinstance(m, dict) and "id" in m and ("result" in m or "error" in m)):
                continue
            p = ex.pending.pop(_key(m["id"]), None)
            if p is None:
                continue
            if p.kind == "call":
                await self._settle_answer(p, m, status)
                continue
            new = self._filter_tools(p, m)
            if new is not None:
                out = out if out is not None else list(msgs)
                out[i] = new
        return out

    async def _settle_unanswered(self, ex: _Exchange, outcome: str, status: int,
                                 err: GatewayError | None = None) -> list[dict[str, Any]]:
        """Settle the calls still owed an answer with `outcome`; returns the JSON-RPC errors
        to send for them when `err` is given. "cancelled": the client went away; the call was
        made but its outcome is unknown, so it counts for nothing on the breaker."""
        errors = []
        for k, p in list(ex.pending.items()):
            ex.pending.pop(k, None)
            if p.kind != "call" or p.ticket is None:
                continue
            if outcome == "cancelled":
                p.ticket.tool = replace(p.ticket.tool, breaker=None)
                await self.gate.settle(p.ticket, status, outcome, None)
                continue
            await self.gate.settle(p.ticket, status, outcome, None, charged=False)
            if err is not None:
                errors.append(rpc_error(p.rpc_id, GatewayError(
                    err.status, err.code, f"tool {p.tool!r}: {err.message}",
                    retry_after=err.retry_after), p.tool))
        return errors

    def _abandon(self, ex: _Exchange) -> None:
        """The handler is being cancelled: settle what `ex` waits for in the background."""
        if ex.pending:
            left = _Exchange(ex.server, ex.srv, dict(ex.pending))
            ex.pending.clear()
            self._spawn(self._settle_unanswered(left, "cancelled", 499))

    async def _whole(self, upstream: aiohttp.ClientResponse, ex: _Exchange, batch: bool,
                     forward: list[Any], rid: str) -> web.Response:
        try:
            payload = await upstream.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            upstream.close()
            return await self._fail_post(ex, forward, batch,
                                         self._transport_error(ex.server, exc), rid)
        finally:
            upstream.release()
        headers = self._client_headers(upstream, rid)
        status = upstream.status
        if ex.pending and payload:
            parsed = _loads(payload)
            items = parsed if isinstance(parsed, list) else [parsed]
            out = await self._on_messages(ex, items, status)
            if out is not None:
                payload = _dumps(out if isinstance(parsed, list) else out[0])
        if ex.pending:  # no answer for them in the body
            if 400 <= status < 500:  # the server refused the request: not the tool's failure
                await self._settle_unanswered(ex, TOOL_ERROR, status)
            else:
                await self._settle_unanswered(ex, FAILURE, 502 if status < 400 else status)
        if ex.refusals:
            parsed = _loads(payload) if payload else None
            merged = ex.refusals + (parsed if isinstance(parsed, list) else
                                    [parsed] if isinstance(parsed, dict) else [])
            headers["Content-Type"] = "application/json"
            return web.Response(status=200 if status in (202, 204) else status,
                                body=_dumps(merged), headers=headers)
        return web.Response(status=status, body=payload, headers=headers)

    async def _relay_sse(self, request: web.Request, upstream: aiohttp.ClientResponse,
                         ex: _Exchange, rid: str, sid: str | None = None) -> web.StreamResponse:
        """Relay an SSE answer event by event: an event that answers a gated call settles it
        before the client sees it, a tool list is rewritten in its event. `sid`: a resumed
        stream (GET with Last-Event-ID) serving the parked answers of that MCP session."""
        headers = self._client_headers(upstream, rid)
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
        response = web.StreamResponse(status=upstream.status, headers=headers)
        events = _Events()
        status = upstream.status
        session_id = sid or request.headers.get("Mcp-Session-Id")
        gone = not await prepare_client(response, request)
        cut: GatewayError | None = None
        try:
            if not gone and ex.refusals:
                gone = not await write_client(response, b"".join(map(_sse_message, ex.refusals)))
            if not gone:
                try:
                    async for chunk in upstream.content.iter_any():
                        out = await self._on_events(ex, events.feed(chunk), status)
                        if out and not await write_client(response, out):
                            gone = True
                            break
                    else:
                        last, rest = events.finish()
                        out = await self._on_events(ex, last, status) + rest
                        if out and not await write_client(response, out):
                            gone = True
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    cut = self._transport_error(ex.server, exc)
            if not gone and ex.pending:
                resumable = events.saw_id and session_id is not None
                if resumable and (cut is None or cut.code != "upstream_timeout"):
                    # The client resumes the stream with a GET and Last-Event-ID.
                    self._park(ex, session_id)  # type: ignore[arg-type]
                else:
                    cut = cut or GatewayError(502, "upstream_error", f"MCP server "
                                              f"{ex.server!r} ended the stream without "
                                              "answering")
                    errors = await self._settle_unanswered(ex, FAILURE, cut.status, cut)
                    if errors:
                        gone = not await write_client(response, b"".join(map(_sse_message, errors)))
            if not gone:
                try:
                    await response.write_eof()
                except ConnectionError:
                    gone = True
        except asyncio.CancelledError:
            gone = True
            if sid is None:
                self._abandon(ex)
            raise
        finally:
            if not gone and cut is None and upstream.content.at_eof():
                upstream.release()
            else:
                upstream.close()
        if gone and ex.pending and sid is None:
            await self._settle_unanswered(ex, "cancelled", 499)
        return response

    async def _on_events(self, ex: _Exchange, events: list[bytes], status: int) -> bytes:
        """Complete SSE events as they go on to the client: the messages that answer what
        `ex` waits for are handled (and a tool list rewritten) first."""
        out = []
        for event in events:
            name, data = _event_data(event)
            if ex.pending and data and name in (None, b"message"):
                parsed = _loads(data)
                items = parsed if isinstance(parsed, list) else [parsed]
                new = await self._on_messages(ex, items, status)
                if new is not None:
                    event = _with_data(event, _dumps(new if isinstance(parsed, list) else new[0]))
            out.append(event + b"\n\n")
        return b"".join(out)

    # --- resumable streams ---------------------------------------------------------------
    def _park(self, ex: _Exchange, session_id: str) -> None:
        """Keep what `ex` still waits for until a GET with Last-Event-ID brings it, for at
        most the server's timeout_s."""
        key = (ex.server, session_id)
        parked = self._parked.get(key)
        if parked is not ex:
            if parked is None:
                parked = self._parked[key] = _Exchange(ex.server, ex.srv)
            parked.pending.update(ex.pending)
            ex.pending.clear()
        if parked.timer is not None:
            parked.timer.cancel()
        parked.timer = asyncio.get_running_loop().call_later(
            ex.srv.timeout_s, lambda: self._spawn(self._expire(key, parked)))

    async def _expire(self, key: tuple[str, str], ex: _Exchange) -> None:
        if self._parked.get(key) is ex:
            del self._parked[key]
        await self._settle_unanswered(ex, FAILURE, 504)

    # --- GET, DELETE -----------------------------------------------------------------------
    async def _get(self, request: web.Request, server: str, srv: McpServerConfig, caller: Caller,
                   rid: str) -> web.StreamResponse:
        headers = self._upstream_headers(request, srv)
        try:
            upstream = await self._send("GET", request, srv, headers, None, long_lived=True)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _json((err := self._transport_error(server, exc)).status,
                         rpc_error(None, err))
        ctype = upstream.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "text/event-stream":
            return await self._whole(upstream, _Exchange(server, srv), False, [], rid)
        sid = request.headers.get("Mcp-Session-Id")
        parked = self._parked.get((server, sid)) if sid else None
        if parked is not None and request.headers.get("Last-Event-ID"):
            # A resumed stream: it replays the answers the closed POST stream owed.
            try:
                return await self._relay_sse(request, upstream, parked, rid, sid)
            finally:
                if not parked.pending and self._parked.get((server, sid)) is parked:
                    del self._parked[(server, sid)]
                    if parked.timer is not None:
                        parked.timer.cancel()
        return await self._passthrough(request, upstream, rid)

    async def _passthrough(self, request: web.Request, upstream: aiohttp.ClientResponse,
                           rid: str) -> web.StreamResponse:
        """A stream relayed a network chunk at a time, as it comes."""
        headers = self._client_headers(upstream, rid)
        headers["X-Accel-Buffering"] = "no"
        response = web.StreamResponse(status=upstream.status, headers=headers)
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientError, TimeoutError):
            pass
        finally:
            upstream.close()
        return response

    async def _plain(self, request: web.Request, server: str, srv: McpServerConfig,
                     rid: str) -> web.StreamResponse:
        if request.method == "DELETE" and (sid := request.headers.get("Mcp-Session-Id")):
            parked = self._parked.pop((server, sid), None)
            if parked is not None:
                if parked.timer is not None:
                    parked.timer.cancel()
                await self._settle_unanswered(parked, "cancelled", 499)
        body = await request.read()
        try:
            upstream = await self._send(request.method, request, srv,
                                        self._upstream_headers(request, srv), body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _json((err := self._transport_error(server, exc)).status,
                         rpc_error(None, err))
        ctype = upstream.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "text/event-stream":
            return await self._passthrough(request, upstream, rid)
        return await self._whole(upstream, _Exchange(server, srv), False, [], rid)
