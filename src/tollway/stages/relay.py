"""Relay one upstream answer to the client: whole or streamed, translated when the client
and the provider speak different dialects.

Streams are passed through a network chunk at a time: the complete SSE events of each chunk
are shown to the upstream dialect's observer (usage, produced text), translated if needed,
and written at once; nothing is held back. A client that goes away cancels the upstream
call; an upstream that goes away mid-stream ends the client's stream with an error event in
its dialect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from tollway.errors import GatewayError
from tollway.exchange import Exchange
from tollway.observe.metrics import Metrics
from tollway.policy.model_calls import response_text, response_tool_names, stream_tool_names
from tollway.protocols import translate
from tollway.protocols.base import Endpoint, StreamObserver
from tollway.protocols.sse import EventSplitter
from tollway.stages.base import tollway_headers
from tollway.wire import prepare_client, write_client

# Upstream response headers worth passing on to the client.
_PASS_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "openai-")
_PASS_HEADERS = frozenset({"retry-after", "x-request-id", "request-id", "retry-after-ms"})
_HIDDEN = frozenset({"openai-organization", "openai-project"})  # the provider account's ids

# A chunk hook sees the stream's observer after each network chunk, before the client gets
# it, and may stop the stream by raising a GatewayError (a budget that ran out, say).
ChunkHook = Callable[[Exchange, StreamObserver], None]


class StreamTranslator(Protocol):
    def feed(self, blob: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


@dataclass(slots=True)
class Translation:
    """How the client's dialect maps onto the provider's for one attempt."""

    upstream: Endpoint  # the endpoint actually called
    response: Callable[[dict[str, Any], str], dict[str, Any]]
    error: Callable[[int, bytes], bytes]
    stream: Callable[[], StreamTranslator]


def passed_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    out = {}
    for k, v in upstream.headers.items():
        lk = k.lower()
        if (lk in _PASS_HEADERS or lk.startswith(_PASS_PREFIXES)) and lk not in _HIDDEN:
            out[k] = v
    return out


async def whole(ex: Exchange, upstream: aiohttp.ClientResponse, ctype: str,
                tr: Translation | None, metrics: Metrics, provider: str) -> web.Response:
    try:
        payload = await upstream.read()
    except TimeoutError as exc:
        metrics.upstream_errors.labels(provider, "timeout").inc()
        raise GatewayError(504, "upstream_timeout",
                           f"provider {provider!r} did not finish in time") from exc
    except aiohttp.ClientError as exc:
        metrics.upstream_errors.labels(provider, "dropped").inc()
        raise GatewayError(502, "upstream_dropped",
                           f"provider {provider!r} dropped the connection "
                           f"({type(exc).__name__})") from exc
    finally:
        upstream.release()
        ex.upstream_ended = time.perf_counter()
    status = upstream.status
    endpoint = tr.upstream if tr else ex.endpoint
    parsed: Any = None
    if status < 300 and (ex.endpoint.billable or tr):
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and ex.endpoint.billable:
            usage = endpoint.dialect.usage(endpoint, parsed)
            if usage is not None:
                ex.usage, ex.usage_source = usage, "upstream"
        if isinstance(parsed, dict):
            if ex.body.get("tools"):
                ex.tool_calls = response_tool_names(parsed)
            ex.completion_text = lambda: response_text(parsed)
    if tr is not None:
        if status < 300 and isinstance(parsed, dict):
            payload = orjson.dumps(tr.response(parsed, ex.model_name))
        elif status >= 400:
            payload = tr.error(status, payload)
        ctype = "application/json"
    ex.status = status
    if ex.tool_policy is not None and status == 200:
        payload = ex.tool_policy.whole(ex, payload)
    if ex.cache_store and status == 200:
        ex.cache_body = payload
    headers = passed_headers(upstream)
    headers.update(tollway_headers(ex))
    return web.Response(status=status, body=payload, headers=headers,
                        content_type=(ctype.split(";")[0] or "application/json"))


async def stream(ex: Exchange, upstream: aiohttp.ClientResponse, strip: bool,
                 tr: Translation | None, hooks: list[ChunkHook], metrics: Metrics,
                 provider: str) -> web.StreamResponse:
    endpoint = tr.upstream if tr else ex.endpoint
    observer = endpoint.dialect.observer(endpoint, strip and tr is None)
    translator = tr.stream() if tr else None
    headers = passed_headers(upstream)
    headers.update(tollway_headers(ex))
    headers["Cache-Control"] = "no-cache"
    headers["X-Accel-Buffering"] = "no"
    response = web.StreamResponse(status=upstream.status, headers=headers)
    response.content_type = "text/event-stream"
    ex.status = upstream.status
    splitter = EventSplitter()
    cut: GatewayError | None = None
    keep: list[bytes] | None = [] if ex.cache_store else None  # what to cache, if it ends well
    offered_tools = bool(ex.body.get("tools"))
    if not await prepare_client(response, ex.request):
        upstream.close()
        ex.upstream_ended = time.perf_counter()
        ex.client_disconnected = ex.stream_truncated = True
        ex.status = 499
        return response
    try:
        async for chunk in upstream.content.iter_any():
            blob = splitter.feed(chunk)
            if not blob:
                continue
            out = observer.feed(blob)
            for hook in hooks:
                hook(ex, observer)
            if translator is not None:
                out = translator.feed(out)
            if out and offered_tools:
                ex.tool_calls += stream_tool_names(out)
                if ex.tool_policy is not None:
                    ex.tool_policy.chunk(ex, out)
            if out:
                if not ex.first_token_at and observer.saw_content:
                    ex.first_token_at = time.perf_counter()
                if keep is not None:
                    keep.append(out)
                if not await write_client(response, out):
                    ex.client_disconnected = True
                    break
        else:
            tail = translator.finish() if translator is not None else b""
            if tail and not await write_client(response, tail):
                ex.client_disconnected = True
            if keep is not None and tail:
                keep.append(tail)
            if not observer.finished:
                cut = GatewayError(502, "upstream_stream_truncated",
                                   "the provider ended the stream before it was complete")
    except GatewayError as err:  # a chunk hook stopped the stream
        cut = err
    except TimeoutError:
        cut = GatewayError(504, "upstream_timeout", "the provider stopped sending mid-stream")
        metrics.upstream_errors.labels(provider, "timeout").inc()
    except aiohttp.ClientError as exc:
        metrics.upstream_errors.labels(provider, "dropped").inc()
        cut = GatewayError(502, "upstream_dropped",
                           f"the provider dropped the stream ({type(exc).__name__})")
    except asyncio.CancelledError:
        ex.client_disconnected = True
        raise
    finally:
        ex.upstream_ended = time.perf_counter()
        if observer.finished and not ex.client_disconnected:
            upstream.release()
        else:
            upstream.close()  # drop the connection: the provider stops generating
        ex.usage = observer.usage
        ex.usage_source = "upstream" if observer.usage_final else "partial"
        ex.completion_text = observer.text
        if ex.client_disconnected:
            ex.stream_truncated = True
            ex.status = 499  # as nginx logs it: the client closed the request
            metrics.stream_interruptions.labels("client", ex.model_name).inc()
    if cut is not None and not ex.client_disconnected:
        ex.stream_truncated = True
        ex.status = cut.status
        ex.error_code = cut.code
        if cut.code.startswith("upstream"):
            metrics.stream_interruptions.labels("upstream", ex.model_name).inc()
        if not await write_client(response, ex.endpoint.dialect.stream_error(cut)):
            ex.client_disconnected = True
    if keep is not None and cut is None and observer.finished and not ex.client_disconnected:
        ex.cache_body = b"".join(keep)
    if not ex.client_disconnected:
        try:
            await response.write_eof()
        except ConnectionError:
            ex.client_disconnected = True
    return response


def translation(client: Endpoint, provider_kind: str, ex: Exchange, upstream_model: str,
                default_max_tokens: int) -> tuple[Translation, dict[str, Any]] | None:
    """The translated request body and how to translate the answer back; None when the
    provider speaks the client's dialect."""
    from tollway.protocols import anthropic as an
    from tollway.protocols import openai as oa

    if provider_kind in ("demo", client.dialect.name):
        return None
    try:
        if client.name == "chat" and provider_kind == "anthropic":
            body = translate.chat_to_messages(ex.body, upstream_model, default_max_tokens)
            asked = (ex.body.get("stream_options") or {}).get("include_usage") is True \
                and not ex.usage_injected
            return Translation(
                upstream=an.MESSAGES, response=translate.messages_response_to_chat,
                error=translate.error_to_openai,
                stream=lambda: translate.MessagesToChatStream(ex.model_name, asked)), body
        if client.name == "messages" and provider_kind == "openai":
            body = translate.messages_to_chat(ex.body, upstream_model)
            return Translation(
                upstream=oa.CHAT, response=translate.chat_response_to_messages,
                error=translate.error_to_anthropic,
                stream=lambda: translate.ChatToMessagesStream(
                    ex.model_name, ex.prompt_tokens_counted)), body
    except translate.TranslationError as exc:
        raise GatewayError(400, "untranslatable", f"this request cannot be sent to a "
                           f"{provider_kind} model: {exc.message}", param=exc.param) from exc
    raise GatewayError(400, "dialect_mismatch",
                       f"the model {ex.model_name!r} is served by a {provider_kind} provider "
                       f"and cannot answer the {client.dialect.name} {client.name} endpoint",
                       param="model")
