"""The HTTP tool handler: ANY /tools/<tool>/<path...> admitted on the tool gate (or on the
tool's fallback while its breaker is open), sent, tried again when it may be, then relayed."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
from typing import Any
from urllib.parse import unquote

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from tollway.config.model import Config
from tollway.errors import GatewayError
from tollway.exchange import Caller
from tollway.observe.metrics import Metrics
from tollway.tools.gate import FAILURE, Ticket, ToolGate, call_digest
from tollway.tools.http.body import _Body, _read_body, _too_large, _TooLarge, _Upload
from tollway.tools.http.relay import _outcome, error_response, relay
from tollway.tools.http.tool import (
    REFUSED_METHODS,
    HttpTool,
    _split,
    _upstream_headers,
    call_arguments,
)

log = logging.getLogger("tollway.tools.http")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_BACKOFF_S = 0.05
_background: set[asyncio.Task[None]] = set()  # settlements of cancelled calls, in flight


class HttpTools:
    def __init__(self, cfg: Config, gate: ToolGate, metrics: Metrics) -> None:
        self.cfg = cfg
        self.gate = gate
        self.metrics = metrics
        self.tools = {name: HttpTool.build(name, t) for name, t in cfg.tools.items()}
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self._rng = random.Random()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=256, ttl_dns_cache=300, keepalive_timeout=30)
            # Nothing added on the caller's behalf, nothing decoded on the way back: the
            # tool sees the caller's headers and the caller gets the tool's bytes.
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _new_id(self) -> str:
        return f"req_{self._id_prefix}{next(self._ids):08x}"

    # --- the request -------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        request_id = self._new_id()
        name = request.match_info.get("tool", "")
        try:
            return await self._handle(request, request_id, name)
        except GatewayError as err:
            return error_response(err, request_id, name if name in self.tools else None)

    async def _handle(self, request: web.Request, request_id: str,
                      name: str) -> web.StreamResponse:
        caller = self.gate.identity.resolve(request.headers)
        tool = self.tools.get(name)
        if tool is None:
            raise GatewayError(404, "unknown_tool", f"no HTTP tool named {name!r} is "
                               f"configured (known: {', '.join(sorted(self.tools)) or 'none'})")
        method = request.method.upper()
        if method in REFUSED_METHODS:
            raise GatewayError(405, "method_not_allowed",
                               f"{method} is not proxied to HTTP tools")
        tail, query = _split(request)
        if any(unquote(seg) in (".", "..") for seg in tail.split("/")):
            raise GatewayError(400, "invalid_path", "a tool path may not contain '.' or "
                               "'..' segments")
        body = await _read_body(request, tool)
        session = self.gate.session(request.headers, caller)
        flags: list[str] = []
        args = call_arguments(body, query)
        # found from the arguments as the model emitted them, before any redaction
        keys = self.gate.call_keys(request.headers, tool.name, args)
        found = await self._guard_args(caller, session, request_id, tool, body, args, flags)
        summary = f"{method} {tail or '/'}" + (f"?{query}" if query else "")
        if body.data:  # what the approver needs to see: the call's arguments
            summary += " " + body.data[:400].decode("utf-8", "replace")
        ticket, used, src = await self._admit(caller, session, tool, method, tail, query, body,
                                              request_id, summary, keys)
        ticket.flags += flags
        response = await self._call(request, ticket, used, src, method, tail, query, body,
                                    request_id)
        if found and not response.prepared:  # a streamed answer's headers are gone
            response.headers["x-tollway-guardrail"] = found
        return response

    async def _guard_args(self, caller: Caller, session: str, request_id: str,
                          tool: HttpTool, body: _Body, args: Any, flags: list[str]) -> str:
        """The call's arguments through the guardrails before it is admitted: a block costs
        nothing and counts nothing; a redaction is what the tool receives. A JSON body is
        checked as the object `args` already is (not parsed again), anything else as text."""
        checks = self.gate.guardrails
        if checks is None or not checks.applies("tool_args", caller, tool.name):
            return ""
        if body.data is None:  # streamed up as it arrives: not looked at
            flags.append("guardrail:unscanned")
            return ""
        if isinstance(args, dict) and body.data.lstrip()[:1] == b"{":
            checked = await checks.check("tool_args", caller, session, request_id, tool.name,
                                         args, flags)
            if checked.changed:
                body.data = orjson.dumps(checked.value)
            return checked.summary
        body.data, found = await checks.check_bytes("tool_args", caller, session, request_id,
                                                    tool.name, body.data, flags)
        return found

    async def _admit(self, caller: Caller, session: str, tool: HttpTool, method: str, tail: str,
                     query: str, body: _Body, request_id: str, summary: str,
                     keys: list[str]) -> tuple[Ticket, HttpTool, str | None]:
        """Admit the call on the tool, or on its fallback while the tool's breaker is open.
        Returns (ticket, the tool that will answer, the tool it stands in for)."""
        parts = (method.encode(), f"{tail}?{query}".encode(),
                 *(() if body.data is None else (body.data,)))
        try:
            ticket = await self.gate.admit(caller, session, tool.target,
                                           call_digest(tool.name, *parts), request_id, summary,
                                           keys)
            return ticket, tool, None
        except GatewayError as err:
            if err.code != "breaker_open" or tool.cfg.fallback is None:
                raise
            primary = err
        seen = {tool.name}
        current = tool
        while current.cfg.fallback is not None and current.cfg.fallback not in seen:
            current = self.tools[current.cfg.fallback]
            seen.add(current.name)
            try:
                ticket = await self.gate.admit(caller, session, current.target,
                                               call_digest(current.name, *parts), request_id,
                                               summary, keys)
            except GatewayError as err:
                # Open too, or not one this caller may use: the next one, else the first
                # tool's own 503. Budgets, loops, kill switches: as they are.
                if err.code in ("breaker_open", "policy_denied"):
                    continue
                raise
            self.metrics.child(self.metrics.fallbacks, tool.name, current.name,
                               "breaker_open").inc()
            return ticket, current, tool.name
        raise primary

    async def _call(self, request: web.Request, ticket: Ticket, tool: HttpTool,
                    src: str | None, method: str, tail: str, query: str, body: _Body,
                    request_id: str) -> web.StreamResponse:
        url = tool.url(tail, query)
        headers = _upstream_headers(request.headers, tool, body)
        ours = {"x-tollway-request-id": request_id, "x-tollway-tool": tool.name,
                "x-tollway-agent": ticket.caller.agent, "x-tollway-session": ticket.session}
        if src is not None:
            ours["x-tollway-fallback"] = src
        if body.data is not None and len(body.data) > tool.max_bytes:  # a smaller fallback
            await self.gate.release(ticket)
            return error_response(_too_large(tool), request_id, tool.name, ours)
        upload = _Upload(request, body, tool.max_bytes) if body.streamed else None
        attempts = 1 + (tool.cfg.retries if method in IDEMPOTENT and upload is None else 0)
        ticket.started = time.perf_counter()  # a held call's wait for approval is not latency
        upstream: aiohttp.ClientResponse | None = None
        failure: GatewayError | None = None
        answered = False  # some attempt got an HTTP answer: the call is charged
        try:
            for attempt in range(attempts):
                if attempt:
                    await asyncio.sleep(_BACKOFF_S * 2 ** (attempt - 1)
                                        * self._rng.uniform(0.5, 1.5))
                try:
                    upstream = await self._send(tool, method, url, headers, body, upload)
                except TimeoutError:
                    if upload is not None and upload.client_failed:  # the caller was late
                        await self.gate.release(ticket)
                        return error_response(upload.refusal(), request_id, tool.name, ours)
                    failure = GatewayError(504, "tool_timeout", f"tool {tool.name!r} did not "
                                           f"answer within {tool.cfg.timeout_s:g}s")
                    continue
                except (aiohttp.ClientError, _TooLarge) as exc:
                    if upload is not None and upload.too_large:
                        await self.gate.release(ticket)
                        return error_response(_too_large(tool), request_id, tool.name, ours)
                    if upload is not None and upload.client_failed:
                        await self.gate.release(ticket)
                        return error_response(upload.refusal(), request_id, tool.name, ours)
                    failure = GatewayError(502, "tool_unreachable", f"tool {tool.name!r} "
                                           f"could not be reached ({type(exc).__name__})")
                    continue
                answered = True
                if (upstream.status >= 500 and attempt < attempts - 1
                        and "Retry-After" not in upstream.headers):
                    upstream.release()  # nothing reached the client yet: once more
                    upstream = None
                    continue
                break
            if upstream is None:
                assert failure is not None
                log.warning("tool call failed", extra={"fields": {
                    "tool": tool.name, "request_id": request_id, "code": failure.code,
                    "attempts": attempts}})
                await self.gate.settle(ticket, failure.status, FAILURE, None,
                                       charged=answered)
                return error_response(failure, request_id, tool.name, ours)
            return await relay(self.gate, request, ticket, tool, upstream, ours,
                               request_id)
        finally:
            if not ticket.settled:  # cancelled (a shutdown), or a bug: still accounted
                if upstream is not None:
                    upstream.close()
                    self._later(self.gate.settle(
                        ticket, 499, _outcome(upstream.status, tool.cfg.fail_on_4xx), None))
                elif answered:
                    self._later(self.gate.settle(ticket, 499, FAILURE, None))
                else:
                    self._later(self.gate.release(ticket))

    async def _send(self, tool: HttpTool, method: str, url: URL, headers: CIMultiDict[str],
                    body: _Body, upload: _Upload | None) -> aiohttp.ClientResponse:
        if upload is not None:
            # The body streams in as the caller sends it: only the silence is bounded.
            return await self.session.request(method, url, headers=headers,
                                              data=upload.chunks(), timeout=tool.timeout,
                                              allow_redirects=False)
        async with asyncio.timeout(tool.cfg.timeout_s):
            return await self.session.request(method, url, headers=headers,
                                              data=body.data or None, timeout=tool.timeout,
                                              allow_redirects=False)

    # --- helpers -----------------------------------------------------------------------
    def _later(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        _background.add(task)
        task.add_done_callback(_background.discard)
