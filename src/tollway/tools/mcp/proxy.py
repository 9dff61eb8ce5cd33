"""The MCP proxy: POST/GET/DELETE /mcp/<server>, tools/call admitted on the tool gate (or on
its fallback while the tool's breaker is open) before the POST is forwarded."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tollway.config.model import Config
from tollway.config.tools import McpServerConfig
from tollway.errors import GatewayError
from tollway.exchange import Caller
from tollway.ingress.body import read_body
from tollway.observe.metrics import Metrics
from tollway.tools.gate import Ticket, ToolGate, ToolTarget, breaker_policy, call_digest
from tollway.tools.mcp.ledger import _Pending, _RpcLedger
from tollway.tools.mcp.messages import (
    _INVALID_PARAMS,
    _INVALID_REQUEST,
    RpcRefusal,
    _dumps,
    _json,
    _key,
    _plain_error,
    parse_client,
    rpc_error,
)
from tollway.tools.mcp.parked import ParkedStreams
from tollway.tools.mcp.relay import McpRelay
from tollway.tools.mcp.settle import Settler
from tollway.tools.mcp.upstream import McpUpstream
from tollway.wire import retry_after

log = logging.getLogger("tollway.tools.mcp")

_MAX_TARGETS = 10_000
_SUMMARY_CHARS = 300


class McpProxy:
    def __init__(self, cfg: Config, gate: ToolGate, metrics: Metrics) -> None:
        self.cfg = cfg
        self.max_body_bytes = int(cfg.server.max_body_mb * 1024 * 1024)
        self.gate = gate
        self.metrics = metrics
        self.up = McpUpstream(metrics)  # the MCP servers: one client session, headers, sends
        self._targets: dict[tuple[str, str], ToolTarget] = {}
        self.settler = Settler(gate)
        self.parked = ParkedStreams(self.settler)
        self.relay = McpRelay(self.up, self.settler, self.parked)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()

    # --- plumbing ------------------------------------------------------------------------
    async def close(self) -> None:
        await self.parked.close()
        self.settler.cancel()
        await self.up.close()

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

    # --- entry -----------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["server"]
        rid = self._request_id()
        body, parsed, refused = b"", None, None
        if request.method == "POST":
            try:
                body = await read_body(request, self.max_body_bytes)
            except GatewayError as err:
                return _json(err.status, rpc_error(None, err))
            try:
                parsed = parse_client(body)
            except RpcRefusal as exc:
                refused = exc
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
            if refused is not None:
                return _json(400, refused.body(), CIMultiDict({"x-tollway-request-id": rid}))
            return await self._post(request, name, srv, caller, rid, body, parsed)
        if request.method == "GET":
            return await self._get(request, name, srv, caller, rid)
        return await self._plain(request, name, srv, rid)

    # --- tools/call admission --------------------------------------------------------------
    def _gate_session(self, request: web.Request, server: str, caller: Caller) -> str:
        sid = request.headers.get("Mcp-Session-Id")
        default = None
        if sid:
            default = "mcp-" + hashlib.blake2b(f"{server}\0{sid}".encode(
                "utf-8", "surrogateescape"), digest_size=8).hexdigest()
        return self.gate.session(request.headers, caller, default)

    async def _admit(self, ledger: _RpcLedger, msg: dict[str, Any], caller: Caller,
                     session: str, rid: str, headers: Mapping[str, str],
                     ) -> tuple[Ticket | None, dict[str, Any] | None]:
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
        target = self.target(ledger.server, ledger.srv, tool)
        summary = f"{target.name} {canon[:_SUMMARY_CHARS].decode('utf-8', 'replace')}"
        keys = self.gate.call_keys(headers, tool, args)  # the model names it as MCP does
        flags: list[str] = []
        checks = self.gate.guardrails
        if checks is not None and checks.applies("tool_args", caller, target.name):
            try:
                checked = await checks.check("tool_args", caller, session, rid, target.name,
                                             args, flags)
            except GatewayError as err:
                return None, rpc_error(rpc_id, err, target.name)
            if checked.changed:  # the server gets the redacted arguments
                args = checked.value
                msg["params"] = params = {**params, "arguments": args}
                canon = _dumps(args if args is not None else {}, canonical=True)
        try:
            ticket = await self.gate.admit(caller, session, target,
                                           call_digest(target.name, canon), rid, summary, keys)
            ticket.flags += flags
            return ticket, None
        except GatewayError as err:
            if err.code != "breaker_open" or not target.fallback:
                return None, rpc_error(rpc_id, err, target.name)
            refused = err
        fb = self.target(ledger.server, ledger.srv, target.fallback)
        try:
            ticket = await self.gate.admit(caller, session, fb, call_digest(fb.name, canon), rid,
                                           f"{fb.name} {summary[len(target.name) + 1:]}", keys)
        except GatewayError as err:
            refused.message += (f"; its fallback {fb.name!r} was refused too: "
                                f"{err.message}")
            return None, rpc_error(rpc_id, refused, target.name)
        ticket.flags += flags
        msg["params"] = {**params, "name": target.fallback}  # type: ignore[dict-item]
        log.info("MCP tool call sent to its fallback", extra={"fields": {
            "tool": target.name, "fallback": fb.name, "agent": caller.agent,
            "request_id": rid}})
        return ticket, None

    # --- POST ------------------------------------------------------------------------------
    async def _post(self, request: web.Request, server: str, srv: McpServerConfig,
                    caller: Caller, rid: str, body: bytes, parsed: Any) -> web.StreamResponse:
        batch = isinstance(parsed, list)
        msgs: list[Any] = parsed if batch else [parsed]
        ledger = _RpcLedger(server, srv)
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
                    if k in ledger.pending:
                        ledger.refusals.append(_plain_error(
                            m["id"], _INVALID_REQUEST, "two requests in a batch share an id"))
                        changed = True
                        continue
                    asked = (m.get("params") or {}).get("name") if isinstance(
                        m.get("params"), dict) else None
                    params_before = m.get("params")
                    ticket, refusal = await self._admit(ledger, m, caller, session, rid,
                                                        request.headers)
                    if m.get("params") is not params_before:  # redacted arguments
                        changed = True
                    if ticket is None:
                        ledger.refusals.append(refusal)  # type: ignore[arg-type]
                        changed = True
                        continue
                    if m["params"]["name"] != asked:
                        changed = True
                        fallback_name = m["params"]["name"]
                    ledger.pending[k] = _Pending("call", caller, server, ticket, m["id"])
                elif method == "tools/list" and "id" in m:
                    ledger.pending.setdefault(_key(m["id"]), _Pending("list", caller, server,
                                                                      rpc_id=m["id"]))
                forward.append(m)
        except BaseException:
            await self.settler.release(ledger)
            raise
        if not forward and not ledger.refusals:  # only tools/call notifications, dropped
            return web.Response(status=202, headers={"x-tollway-request-id": rid})
        if not forward:  # every request was refused: answer here
            return _json(200, ledger.refusals if batch else ledger.refusals[0],
                         CIMultiDict({"x-tollway-request-id": rid}))
        payload = (_dumps(forward if batch else forward[0]) if changed else body)
        headers = self.up.upstream_headers(request, srv)
        if fallback_name is not None and not batch and "Mcp-Name" in headers:
            headers["Mcp-Name"] = fallback_name  # the 2026 wire mirrors params.name
        try:
            upstream = await self.up.send("POST", request, srv, headers, payload)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return await self.settler.fail_post(ledger, forward, batch,
                                                self.up.transport_error(server, exc), rid)
        except BaseException:
            await self.settler.release(ledger)
            raise
        ctype = upstream.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if upstream.status >= 500 and ledger.calls:
                retry = retry_after(upstream.headers)
                upstream.close()
                err = GatewayError(502, "upstream_error",
                                   f"MCP server {server!r} answered HTTP {upstream.status}",
                                   retry_after=retry)
                return await self.settler.fail_post(ledger, forward, batch, err, rid,
                                                    upstream.status, retry)
            if ctype == "text/event-stream":
                if not ledger.pending and not ledger.refusals:
                    return await self.relay.passthrough(request, upstream, rid)
                return await self.relay.relay_sse(request, upstream, ledger, rid)
            return await self.relay.whole(upstream, ledger, batch, forward, rid)
        except asyncio.CancelledError:
            self.settler.abandon(ledger)
            raise

    # --- GET, DELETE -----------------------------------------------------------------------
    async def _get(self, request: web.Request, server: str, srv: McpServerConfig,
                   caller: Caller, rid: str) -> web.StreamResponse:
        headers = self.up.upstream_headers(request, srv)
        try:
            upstream = await self.up.send("GET", request, srv, headers, None,
                                          long_lived=True)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _json((err := self.up.transport_error(server, exc)).status,
                         rpc_error(None, err))
        ctype = upstream.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "text/event-stream":
            return await self.relay.whole(upstream, _RpcLedger(server, srv), False, [], rid)
        sid = request.headers.get("Mcp-Session-Id")
        parked = self.parked.get(server, sid) if sid else None
        if parked is not None and request.headers.get("Last-Event-ID"):
            # A resumed stream: it replays the answers the closed POST stream owed.
            try:
                return await self.relay.relay_sse(request, upstream, parked, rid, sid)
            finally:
                self.parked.done(server, sid, parked)  # type: ignore[arg-type]
        return await self.relay.passthrough(request, upstream, rid)

    async def _plain(self, request: web.Request, server: str, srv: McpServerConfig,
                     rid: str) -> web.StreamResponse:
        if request.method == "DELETE" and (sid := request.headers.get("Mcp-Session-Id")):
            await self.parked.drop(server, sid)
        try:
            body = await read_body(request, self.max_body_bytes)
        except GatewayError as err:
            return _json(err.status, rpc_error(None, err))
        try:
            upstream = await self.up.send(request.method, request, srv,
                                          self.up.upstream_headers(request, srv), body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _json((err := self.up.transport_error(server, exc)).status,
                         rpc_error(None, err))
        ctype = upstream.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "text/event-stream":
            return await self.relay.passthrough(request, upstream, rid)
        return await self.relay.whole(upstream, _RpcLedger(server, srv), False, [], rid)
