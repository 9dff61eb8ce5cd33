"""Answers on their way to the client: a JSON body read whole, an SSE stream relayed event by
event (settling the calls it answers as it goes, parking what a resumable stream still owes),
or a stream passed through as it comes."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from tollway.errors import GatewayError
from tollway.tools.gate import FAILURE, TOOL_ERROR
from tollway.tools.mcp.events import _event_data, _Events, _sse_message, _with_data
from tollway.tools.mcp.ledger import _RpcLedger
from tollway.tools.mcp.messages import _dumps, _loads
from tollway.tools.mcp.parked import ParkedStreams
from tollway.tools.mcp.settle import Settler
from tollway.tools.mcp.upstream import McpUpstream
from tollway.wire import prepare_client, write_client


class McpRelay:
    """What the server answered, on its way to the client."""

    def __init__(self, up: McpUpstream, settler: Settler, parked: ParkedStreams) -> None:
        self.up = up
        self.settler = settler
        self.parked = parked

    async def whole(self, upstream: aiohttp.ClientResponse, ledger: _RpcLedger, batch: bool,
                    forward: list[Any], rid: str) -> web.Response:
        try:
            payload = await upstream.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            upstream.close()
            return await self.settler.fail_post(ledger, forward, batch,
                                                self.up.transport_error(ledger.server, exc), rid)
        finally:
            upstream.release()
        headers = self.up.client_headers(upstream, rid)
        status = upstream.status
        if ledger.pending and payload:
            parsed = _loads(payload)
            items = parsed if isinstance(parsed, list) else [parsed]
            out = await self.settler.on_messages(ledger, items, status)
            if out is not None:
                payload = _dumps(out if isinstance(parsed, list) else out[0])
        if ledger.pending:  # no answer for them in the body
            if 400 <= status < 500:  # the server refused the request: not the tool's failure
                await self.settler.settle_unanswered(ledger, TOOL_ERROR, status)
            else:
                await self.settler.settle_unanswered(ledger, FAILURE,
                                                     502 if status < 400 else status)
        if ledger.refusals:
            parsed = _loads(payload) if payload else None
            merged = ledger.refusals + (parsed if isinstance(parsed, list) else
                                        [parsed] if isinstance(parsed, dict) else [])
            headers["Content-Type"] = "application/json"
            return web.Response(status=200 if status in (202, 204) else status,
                                body=_dumps(merged), headers=headers)
        return web.Response(status=status, body=payload, headers=headers)

    async def relay_sse(self, request: web.Request, upstream: aiohttp.ClientResponse,
                        ledger: _RpcLedger, rid: str, sid: str | None = None) -> web.StreamResponse:
        """Relay an SSE answer event by event: an event that answers a gated call settles it
        before the client sees it, a tool list is rewritten in its event. `sid`: a resumed
        stream (GET with Last-Event-ID) serving the parked answers of that MCP session."""
        headers = self.up.client_headers(upstream, rid)
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
        response = web.StreamResponse(status=upstream.status, headers=headers)
        events = _Events()
        status = upstream.status
        session_id = sid or request.headers.get("Mcp-Session-Id")
        gone = not await prepare_client(response, request)
        cut: GatewayError | None = None
        try:
            if not gone and ledger.refusals:
                gone = not await write_client(response,
                                              b"".join(map(_sse_message, ledger.refusals)))
            if not gone:
                try:
                    async for chunk in upstream.content.iter_any():
                        out = await self._on_events(ledger, events.feed(chunk), status)
                        if out and not await write_client(response, out):
                            gone = True
                            break
                    else:
                        last, rest = events.finish()
                        out = await self._on_events(ledger, last, status) + rest
                        if out and not await write_client(response, out):
                            gone = True
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    cut = self.up.transport_error(ledger.server, exc)
            if not gone and ledger.pending:
                resumable = events.saw_id and session_id is not None
                if resumable and (cut is None or cut.code != "upstream_timeout"):
                    # The client resumes the stream with a GET and Last-Event-ID.
                    self.parked.park(ledger, session_id)  # type: ignore[arg-type]
                else:
                    cut = cut or GatewayError(502, "upstream_error", f"MCP server "
                                              f"{ledger.server!r} ended the stream without "
                                              "answering")
                    errors = await self.settler.settle_unanswered(ledger, FAILURE, cut.status, cut)
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
                self.settler.abandon(ledger)
            raise
        finally:
            if not gone and cut is None and upstream.content.at_eof():
                upstream.release()
            else:
                upstream.close()
        if gone and ledger.pending and sid is None:
            await self.settler.settle_unanswered(ledger, "cancelled", 499)
        return response

    async def _on_events(self, ledger: _RpcLedger, events: list[bytes], status: int) -> bytes:
        """Complete SSE events as they go on to the client: the messages that answer what
        `ledger` waits for are handled (and a tool list rewritten) first."""
        out = []
        for event in events:
            name, data = _event_data(event)
            if ledger.pending and data and name in (None, b"message"):
                parsed = _loads(data)
                items = parsed if isinstance(parsed, list) else [parsed]
                new = await self.settler.on_messages(ledger, items, status)
                if new is not None:
                    event = _with_data(event, _dumps(new if isinstance(parsed, list) else new[0]))
            out.append(event + b"\n\n")
        return b"".join(out)

    async def passthrough(self, request: web.Request, upstream: aiohttp.ClientResponse,
                          rid: str) -> web.StreamResponse:
        """A stream relayed a network chunk at a time, as it comes."""
        headers = self.up.client_headers(upstream, rid)
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
