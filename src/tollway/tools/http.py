"""HTTP tools: ANY /tools/<tool>/<path...> proxied to the tool's configured URL.

`/tools/weather/v1/forecast?city=Rome` goes to `<url of weather>/v1/forecast?city=Rome` with
the method, the query (byte for byte), the body and the end-to-end headers intact. Dropped on
the way up: hop-by-hop headers (and those the Connection header names), Host and
Content-Length (recomputed), the caller's Authorization and x-api-key (tollway virtual keys,
never the tool's) and every x-tollway-* header; the tool's configured `headers` (its
credentials) are added. Dropped on the way back: hop-by-hop headers and any x-tollway-*
header the tool sent; bodies are passed through untouched (no decompression).

Every call goes through the tool gate (key limits, policies, loops, the breaker, budgets,
approvals) before it is made and is settled on it after, exactly once, even when the client
goes away mid-stream; a call that was never made is released instead.

Request bodies up to 1 MiB are read whole: they are part of the call's digest (the loop
detector's "same arguments") and may be sent again on a retry. Larger or chunked bodies are
streamed up as they arrive: their digest covers only the method, path and query, and they
are never retried. `max_body_mb` is enforced either way (413).

Response bodies with a known length up to 1 MiB are read whole: the call is settled (its
result digest noted for the loop detector, its outcome on the breaker, its cost) before the
client gets the answer, so an agent's next call always sees this one. Others (SSE, chunked,
big downloads) are streamed chunk by chunk and settled before the end of the stream; their
result digest is taken if the whole body was at most 1 MiB.

Outcomes on the breaker: a transport error, a timeout or a 5xx is always a failure; so is a
429 (the tool is overloaded, not answering the call), whose Retry-After, like a 503's, keeps
the breaker open at least that long; any other 4xx is the tool's own answer (`tool_error`)
unless the tool has `fail_on_4xx: true`. Idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE)
with a body read whole are tried again up to `retries` times on a transport error, a timeout
or a 5xx without Retry-After, before anything reached the caller; the breaker, the metrics
and the spend see the call once, with its final outcome.

While a tool's breaker is open, its `fallback` (and the fallback's, in turn) is called with
the same method, path, query and body; the answer names the tool that gave it
(x-tollway-tool) and the one it stands in for (x-tollway-fallback). Without one (or when every
fallback is open too, or not one the caller may use) the caller gets 503 `breaker_open` with
Retry-After. TRACE and CONNECT are refused (a TRACE would echo the tool's credentials back),
as are paths with '.' or '..' segments (they would climb out of the tool's URL).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import aiohttp
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict
from yarl import URL

from tollway.config.model import Config
from tollway.config.tools import HttpToolConfig
from tollway.errors import GatewayError
from tollway.exchange import Caller
from tollway.observe.metrics import Metrics
from tollway.protocols.base import ERROR_TYPES_OPENAI
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
from tollway.wire import retry_after as parse_retry_after

log = logging.getLogger("tollway.tools.http")

BUFFER_MAX = 1 << 20  # request bodies up to this are read whole (digested, retryable)
DIGEST_MAX = 1 << 20  # response bodies up to this are digested for the loop detector
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
REFUSED_METHODS = frozenset({"CONNECT", "TRACE"})  # TRACE would echo the tool's credentials
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade"})
_DROP_REQUEST = HOP_BY_HOP | {"host", "content-length", "expect", "authorization", "x-api-key"}
_DROP_RESPONSE = HOP_BY_HOP | {"content-length"}
_BACKOFF_S = 0.05
_background: set[asyncio.Task[None]] = set()  # settlements of cancelled calls, in flight


@dataclass(frozen=True, slots=True)
class HttpTool:
    """One configured tool, resolved once per config."""

    name: str
    cfg: HttpToolConfig
    target: ToolTarget
    scheme_authority: str  # "https://api.example.com"
    path: str  # the configured URL's path, as written
    base_path: str  # without its trailing slash ("" for the root)
    base_query: str  # a query already in the configured URL, kept before the caller's
    headers: Mapping[str, str] = field(repr=False)  # credentials: never in a log line
    timeout: aiohttp.ClientTimeout
    max_bytes: int

    @classmethod
    def build(cls, name: str, cfg: HttpToolConfig) -> HttpTool:
        url = URL(cfg.url)
        return cls(
            name=name, cfg=cfg,
            target=ToolTarget(name=name, server="http", cost_usd=cfg.cost_usd,
                              breaker=breaker_policy(cfg.breaker),
                              fail_on_error=cfg.fail_on_4xx, fallback=cfg.fallback),
            scheme_authority=f"{url.scheme}://{url.raw_authority}",
            path=url.raw_path, base_path=url.raw_path.rstrip("/"),
            base_query=url.raw_query_string,
            headers=dict(cfg.headers),
            # Connect, then the silence between reads (the answer's start, a stream's
            # chunks) is bounded; how long a stream lasts is not.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout_s,
                                          sock_read=cfg.timeout_s),
            max_bytes=int(cfg.max_body_mb * 1024 * 1024))

    def url(self, tail: str, query: str) -> URL:
        q = "&".join(p for p in (self.base_query, query) if p)
        path = (self.base_path + tail if tail else self.path) or "/"
        return URL(f"{self.scheme_authority}{path}" + (f"?{q}" if q else ""), encoded=True)


@dataclass(slots=True)
class _Body:
    data: bytes | None  # the whole body; None when it is streamed
    prefix: bytes = b""  # streamed: what was already read while deciding
    length: int | None = None  # streamed: the declared Content-Length, if any

    @property
    def streamed(self) -> bool:
        return self.data is None


class _Upload:
    """A streamed request body on its way up; knows why it stopped, if it did."""

    def __init__(self, request: web.Request, body: _Body, max_bytes: int) -> None:
        self.request = request
        self.body = body
        self.max_bytes = max_bytes
        self.too_large = False
        self.client_failed = False
        self.started = False

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        sent = len(self.body.prefix)
        if self.body.prefix:
            yield self.body.prefix
        while True:
            try:
                chunk = await self.request.content.readany()
            except Exception:
                self.client_failed = True
                raise
            if not chunk:
                return
            sent += len(chunk)
            if sent > self.max_bytes:
                self.too_large = True
                raise _TooLarge
            yield chunk


class _TooLarge(Exception):
    pass


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
            return self._error(err, request_id, name if name in self.tools else None)

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
        summary = f"{method} {tail or '/'}" + (f"?{query}" if query else "")
        ticket, used, src = await self._admit(caller, session, tool, method, tail, query, body,
                                              request_id, summary)
        return await self._call(request, ticket, used, src, method, tail, query, body,
                                request_id)

    async def _admit(self, caller: Caller, session: str, tool: HttpTool, method: str, tail: str,
                     query: str, body: _Body, request_id: str,
                     summary: str) -> tuple[Ticket, HttpTool, str | None]:
        """Admit the call on the tool, or on its fallback while the tool's breaker is open.
        Returns (ticket, the tool that will answer, the tool it stands in for)."""
        parts = (method.encode(), f"{tail}?{query}".encode(),
                 *(() if body.data is None else (body.data,)))
        try:
            ticket = await self.gate.admit(caller, session, tool.target,
                                           call_digest(tool.name, *parts), request_id, summary)
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
                                               summary)
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
            return self._error(_too_large(tool), request_id, tool.name, ours)
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
                    failure = GatewayError(504, "tool_timeout", f"tool {tool.name!r} did not "
                                           f"answer within {tool.cfg.timeout_s:g}s")
                    continue
                except (aiohttp.ClientError, _TooLarge) as exc:
                    if upload is not None and upload.too_large:
                        await self.gate.release(ticket)
                        return self._error(_too_large(tool), request_id, tool.name, ours)
                    if upload is not None and upload.client_failed:
                        await self.gate.release(ticket)
                        return self._error(GatewayError(
                            400, "incomplete_body", "the request body ended before it was "
                            "complete"), request_id, tool.name, ours)
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
                return self._error(failure, request_id, tool.name, ours)
            return await self._relay(request, ticket, tool, upstream, ours, request_id)
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

    async def _relay(self, request: web.Request, ticket: Ticket, tool: HttpTool,
                     upstream: aiohttp.ClientResponse, ours: dict[str, str],
                     request_id: str) -> web.StreamResponse:
        status = upstream.status
        outcome = _outcome(status, tool.cfg.fail_on_4xx)
        retry_after = parse_retry_after(upstream.headers) if status in (429, 503) else None
        headers = _downstream_headers(upstream.headers)
        headers.update(ours)
        length = upstream.content_length
        head = request.method.upper() == "HEAD"
        if head or (length is not None and length <= DIGEST_MAX):
            return await self._whole(ticket, tool, upstream, headers, outcome, retry_after,
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
        digest = (result_digest(b"".join(keep))
                  if keep is not None and not gone and cut is None else None)
        await self.gate.settle(ticket, settled_status, outcome, digest,
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

    async def _whole(self, ticket: Ticket, tool: HttpTool, upstream: aiohttp.ClientResponse,
                     headers: CIMultiDict[str], outcome: str, retry_after: float | None,
                     request_id: str, head: bool) -> web.StreamResponse:
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
            await self.gate.settle(ticket, err.status, FAILURE, None)
            return self._error(err, request_id, tool.name,
                               {k: v for k, v in headers.items() if k.startswith("x-tollway")})
        finally:
            upstream.release()
        await self.gate.settle(ticket, upstream.status, outcome, result_digest(payload),
                               retry_after_s=retry_after if outcome == FAILURE else None)
        if head and upstream.content_length is not None:
            headers["Content-Length"] = str(upstream.content_length)  # what a GET would get
        response = web.Response(status=upstream.status, reason=upstream.reason,
                                headers=headers)
        if payload:
            response.body = payload
        return response

    # --- helpers -----------------------------------------------------------------------
    def _error(self, err: GatewayError, request_id: str, tool: str | None,
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

    def _later(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        _background.add(task)
        task.add_done_callback(_background.discard)


def _split(request: web.Request) -> tuple[str, str]:
    """The raw path below /tools/<tool> ("" or "/...") and the raw query, as sent."""
    parts = request.rel_url.raw_path.split("/", 3)  # "", "tools", "<tool>", rest
    tail = "/" + parts[3] if len(parts) == 4 else ""
    return tail, request.rel_url.raw_query_string


def _too_large(tool: HttpTool) -> GatewayError:
    return GatewayError(413, "body_too_large", f"the request body is larger than the "
                        f"{tool.cfg.max_body_mb:g} MB tool {tool.name!r} accepts (max_body_mb)")


async def _read_body(request: web.Request, tool: HttpTool) -> _Body:
    """Small bodies whole; big or chunked ones are left to stream (what was read to decide
    is kept as their prefix)."""
    if not request.body_exists:
        return _Body(b"")
    declared = request.content_length
    if declared is not None and declared > tool.max_bytes:
        raise _too_large(tool)
    if declared is not None and declared > BUFFER_MAX:
        return _Body(None, length=declared)
    buf = bytearray()
    try:
        while len(buf) <= BUFFER_MAX:
            chunk = await request.content.readany()
            if not chunk:
                if len(buf) > tool.max_bytes:
                    raise _too_large(tool)
                return _Body(bytes(buf))
            buf += chunk
    except (ConnectionError, aiohttp.ClientPayloadError, HttpProcessingError) as exc:
        raise GatewayError(400, "incomplete_body", "the request body ended before it was "
                           "complete") from exc
    if len(buf) > tool.max_bytes:
        raise _too_large(tool)
    return _Body(None, prefix=bytes(buf), length=declared)


def _upstream_headers(client: Mapping[str, str], tool: HttpTool,
                      body: _Body) -> CIMultiDict[str]:
    named = {h.strip().lower() for h in client.get("Connection", "").split(",") if h.strip()}
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in client.items():
        lk = k.lower()
        if lk in _DROP_REQUEST or lk in named or lk.startswith("x-tollway-"):
            continue
        out.add(k, v)
    for k, v in tool.headers.items():
        out[k] = v
    if body.streamed and body.length is not None:
        out["Content-Length"] = str(body.length)  # streamed, but not chunked
    return out


def _downstream_headers(upstream: Mapping[str, str]) -> CIMultiDict[str]:
    named = {h.strip().lower() for h in upstream.get("Connection", "").split(",")
             if h.strip()}
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in upstream.items():
        lk = k.lower()
        if lk in _DROP_RESPONSE or lk in named or lk.startswith("x-tollway"):
            continue
        out.add(k, v)
    return out


def _outcome(status: int, fail_on_4xx: bool) -> str:
    if status >= 500 or status == 429:
        return FAILURE
    if status >= 400:
        return FAILURE if fail_on_4xx else TOOL_ERROR
    return OK
