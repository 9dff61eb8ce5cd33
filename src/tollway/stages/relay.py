"""Relay one upstream answer to the client: whole or streamed, translated when the client
and the provider speak different dialects.

Streams are passed through a network chunk at a time: the complete SSE events of each chunk
are shown to the upstream dialect's observer (usage, produced text, tool calls), translated
if needed, passed through the stages' response hooks, and written at once; nothing is held
back here. A hook may hold the stream (an approval): the events it lets go first are written,
then nothing more is read from the upstream until the hold is over. A client that goes away
cancels the upstream call; an upstream that goes away mid-stream, or a hook that ends the
stream, ends the client's stream with an error event in its dialect. The relay knows bytes,
framing and dialects; what to do with an answer belongs to the stages' hooks.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tollway.errors import GatewayError
from tollway.exchange import Body, Chunk, Exchange
from tollway.observe.metrics import Metrics
from tollway.protocols.answers import response_text, response_tool_calls
from tollway.protocols.base import StreamObserver
from tollway.protocols.sse import EventSplitter
from tollway.protocols.usage import BadUsage
from tollway.providers.base import Provider, Translation, Wire, scrub
from tollway.stages.base import tollway_headers
from tollway.wire import prepare_client, write_client

# Upstream response headers worth passing on to the client.
_PASS_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "openai-")
_PASS_HEADERS = frozenset({"retry-after", "x-request-id", "request-id", "retry-after-ms"})
_HIDDEN = frozenset({"openai-organization", "openai-project"})  # the provider account's ids
_DRAIN_PASSES = 64  # loop passes to take what already arrived from an upstream being closed


def passed_headers(upstream: aiohttp.ClientResponse, provider: Provider) -> dict[str, str]:
    out = {}
    for k, v in upstream.headers.items():
        lk = k.lower()
        if (lk in _PASS_HEADERS or lk.startswith(_PASS_PREFIXES)) and lk not in _HIDDEN:
            if provider.secrets:
                v = scrub(v.encode(), provider.secrets).decode(errors="replace")
            out[k] = v
    return out


async def whole(ex: Exchange, upstream: aiohttp.ClientResponse, ctype: str,
                tr: Translation | None, metrics: Metrics, provider: Provider,
                wire: Wire | None = None) -> web.Response:
    name = provider.name
    try:
        payload = await upstream.read()
    except TimeoutError as exc:
        metrics.upstream_errors.labels(name, "timeout").inc()
        raise GatewayError(504, "upstream_timeout",
                           f"provider {name!r} did not finish in time") from exc
    except aiohttp.ClientError as exc:
        metrics.upstream_errors.labels(name, "dropped").inc()
        raise GatewayError(502, "upstream_dropped",
                           f"provider {name!r} dropped the connection "
                           f"({type(exc).__name__})") from exc
    finally:
        upstream.release()
        ex.upstream.ended = time.perf_counter()
    status = upstream.status
    if provider.secrets:
        payload = scrub(payload, provider.secrets)
    parsed: Any = None
    if wire is not None:  # read as chat: the converted answer comes parsed already
        (payload, parsed), ctype = wire.body(status, payload), "application/json"
    endpoint = tr.upstream if tr else ex.endpoint
    out = ex.outcome
    if status < 300 and (ex.endpoint.billable or tr):
        if parsed is None:
            try:
                parsed = orjson.loads(payload)
            except orjson.JSONDecodeError:
                parsed = None
        if isinstance(parsed, dict) and ex.endpoint.billable:
            try:
                usage = endpoint.dialect.usage(endpoint, parsed)
            except BadUsage:
                _bad_usage(ex, metrics, name)
            else:
                if usage is not None:
                    out.usage, out.usage_source = usage, "upstream"
        if isinstance(parsed, dict):
            answer = parsed
            if ex.body.get("tools"):
                calls = response_tool_calls(answer)
                out.tool_calls = [c.name for c in calls]
                out.call_ids = [c.id for c in calls if c.id]
                out.call_args = [(c.name, c.arguments) for c in calls]
            if endpoint.name == "responses" and isinstance(answer.get("id"), str):
                out.response_id = answer["id"]
            out.text = lambda: response_text(answer)
    shown = parsed if isinstance(parsed, dict) else None  # the answer in the client's dialect
    if tr is not None:
        shown = None
        if status < 300 and isinstance(parsed, dict):
            shown = tr.response(parsed, ex.model_name)
            payload = orjson.dumps(shown)
        elif status >= 400:
            payload = tr.error(status, payload)
        ctype = "application/json"
    out.status = status
    if ex.hooks:
        # the hooks read the object this answer was made from, not a second parse of it
        answer_body = Body(status, payload) if shown is None else Body(status, payload, shown)
        await ex.pass_body(answer_body)
        payload = answer_body.payload
        if answer_body.status != status:  # a hook refused the answer (a guardrail's block)
            status = out.status = answer_body.status
            ctype = "application/json"
    headers = passed_headers(upstream, provider)
    headers.update(tollway_headers(ex))
    return web.Response(status=status, body=payload, headers=headers,
                        content_type=(ctype.split(";")[0] or "application/json"))


async def stream(ex: Exchange, upstream: aiohttp.ClientResponse, strip: bool,
                 tr: Translation | None, metrics: Metrics, provider: Provider,
                 wire: Wire | None = None) -> web.StreamResponse:
    name, secrets = provider.name, provider.secrets
    endpoint = tr.upstream if tr else ex.endpoint
    observer = endpoint.dialect.observer(endpoint, strip and tr is None,
                                         tools=bool(ex.body.get("tools")))
    translator = tr.stream() if tr else None
    headers = passed_headers(upstream, provider)
    headers.update(tollway_headers(ex))
    headers["Cache-Control"] = "no-cache"
    headers["X-Accel-Buffering"] = "no"
    response = web.StreamResponse(status=upstream.status, headers=headers)
    response.content_type = "text/event-stream"
    out, up = ex.outcome, ex.upstream
    out.status = upstream.status
    splitter = EventSplitter()
    cut: GatewayError | None = None
    hooks = tuple(h.on_chunk for h in reversed(ex.hooks))  # last stage first
    chunk = Chunk(b"", observer)  # one per stream, refilled for each group of events
    if not await prepare_client(response, ex.request):
        upstream.close()
        up.ended = time.perf_counter()
        out.client_disconnected = out.stream_truncated = True
        out.status = 499
        return response
    received = False
    try:
        async for net in _upstream_chunks(upstream, wire):
            received = True
            blob = splitter.feed(net)
            if not blob:
                continue
            if secrets:
                blob = scrub(blob, secrets)
            data = observer.feed(blob)
            if translator is not None:
                data = translator.feed(data)
            if hooks:
                chunk.data = data
                if not await _hooked(ex, hooks, chunk, response, observer):
                    out.client_disconnected = True
                if out.client_disconnected:
                    await _drain_received(upstream, splitter, observer)
                    break
                data = chunk.data
            if data:
                if not up.first_token_at and observer.saw_content:
                    up.first_token_at = time.perf_counter()
                if not await write_client(response, data):
                    out.client_disconnected = True
                    await _drain_received(upstream, splitter, observer)
                    break
        else:
            tail = translator.finish() if translator is not None else b""
            if hooks and tail:
                chunk.data = tail
                if not await _hooked(ex, hooks, chunk, response, observer):
                    out.client_disconnected = True
                tail = chunk.data if not out.client_disconnected else b""
            if tail and not await write_client(response, tail):
                out.client_disconnected = True
            if not observer.finished:
                cut = GatewayError(502, "upstream_stream_truncated",
                                   "the provider ended the stream before it was complete")
    except GatewayError as err:  # a response hook ended the stream
        cut = err
    except TimeoutError:
        cut = GatewayError(504, "upstream_timeout", "the provider stopped sending mid-stream")
        metrics.upstream_errors.labels(name, "timeout").inc()
    except aiohttp.ClientError as exc:
        metrics.upstream_errors.labels(name, "dropped").inc()
        cut = GatewayError(502, "upstream_dropped",
                           f"the provider dropped the stream ({type(exc).__name__})")
    except asyncio.CancelledError:
        out.client_disconnected = True
        raise
    finally:
        up.ended = time.perf_counter()
        if observer.finished and not out.client_disconnected:
            upstream.release()
        else:
            upstream.close()  # drop the connection: the provider stops generating
        if observer.bad_usage:
            _bad_usage(ex, metrics, name)
        elif received:
            out.usage = observer.usage
            out.usage_source = "upstream" if observer.usage_final else "partial"
        # else: the upstream failed before its first byte; nothing was generated to pay for
        out.text = observer.text
        if observer.calls is not None:
            out.tool_calls = observer.calls.names
            out.call_ids = observer.calls.ids
            out.call_args = observer.calls.arguments()
        out.response_id = observer.response_id
        if out.client_disconnected:
            out.stream_truncated = True
            out.status = 499  # as nginx logs it: the client closed the request
            metrics.stream_interruptions.labels("client", ex.model_name).inc()
    if cut is not None and not out.client_disconnected:
        out.stream_truncated = True
        out.status = cut.status
        out.error_code = cut.code
        if cut.code.startswith("upstream"):
            metrics.stream_interruptions.labels("upstream", ex.model_name).inc()
        if not await write_client(response, ex.endpoint.dialect.stream_error(cut)):
            out.client_disconnected = True
    if not out.client_disconnected:
        try:
            await response.write_eof()
        except ConnectionError:
            out.client_disconnected = True
    return response


async def _upstream_chunks(upstream: aiohttp.ClientResponse, wire: Wire | None,
                           ) -> AsyncIterator[bytes]:
    """The upstream's bytes as they come; through its wire conversion first when it has one
    (what the conversion holds back at the end comes last)."""
    if wire is None:
        async for net in upstream.content.iter_any():
            yield net
        return
    conv = wire.stream()
    async for net in upstream.content.iter_any():
        out = conv.feed(net)
        if out:
            yield out
    tail = conv.finish()
    if tail:
        yield tail


async def _hooked(ex: Exchange, hooks: Sequence[Callable[..., Any]], chunk: Chunk,
                  response: web.StreamResponse, observer: StreamObserver) -> bool:
    """Pass a group of events through the response hooks (a plain call each; one may hold
    the stream). False when the client left while a hook held it."""
    for on_chunk in hooks:
        held = on_chunk(ex, chunk)
        if held is not None and not await _wait(ex, held, chunk, response, observer):
            return False
    return True


async def _wait(ex: Exchange, held: Awaitable[None], chunk: Chunk,
                response: web.StreamResponse, observer: StreamObserver) -> bool:
    """A hook holds the stream: write what it lets go first (`chunk.ready`), then wait for
    the hold. False: the client went away meanwhile (the hold is then not waited for)."""
    ready, chunk.ready = chunk.ready, b""
    if ready:
        if not ex.upstream.first_token_at and observer.saw_content:
            ex.upstream.first_token_at = time.perf_counter()
        if not await write_client(response, ready):
            if inspect.iscoroutine(held):
                held.close()
            elif isinstance(held, asyncio.Future):
                held.cancel()
            return False
    await held
    return True


def _bad_usage(ex: Exchange, metrics: Metrics, provider: str) -> None:
    """The upstream's usage is not a set of token counts: price the request from what the
    gateway counts instead (the price stage does), and say so on the step."""
    ex.outcome.usage, ex.outcome.usage_source = None, "invalid"
    ex.flags.append("usage_invalid")
    metrics.child(metrics.usage_invalid, provider).inc()


async def _drain_received(upstream: aiohttp.ClientResponse, splitter: EventSplitter,
                          observer: StreamObserver) -> None:
    """The client is gone: before the upstream connection is closed (which stops the
    provider generating), read what it has already sent, so that it is paid for. Only what
    has arrived: a few passes of the event loop move the socket's bytes into the reader."""
    content = upstream.content
    for _ in range(_DRAIN_PASSES):
        await asyncio.sleep(0)
        try:
            data = content.read_nowait()
        except RuntimeError:  # someone is waiting on the reader: nothing more to take
            return
        if not data:
            return
        blob = splitter.feed(data)
        if blob:
            observer.feed(blob)
