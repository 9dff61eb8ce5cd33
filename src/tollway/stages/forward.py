"""Forward to the upstream over a pooled client; stream chunks through as they arrive.

The original bytes are sent unless a stage changed the body. Streams are split into whole SSE
events, each shown to the dialect's observer (usage, produced text) and written on at once;
nothing is held back. A client that goes away cancels the upstream call; an upstream that
goes away mid-stream ends the client's stream with an error event in its dialect.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

import aiohttp
import orjson
from aiohttp import web

from tollway.config.model import RetryConfig
from tollway.errors import GatewayError
from tollway.exchange import Exchange
from tollway.observe.metrics import Metrics
from tollway.protocols.base import StreamObserver
from tollway.protocols.sse import EventSplitter
from tollway.providers.registry import ModelRoute
from tollway.stages.base import Stage, tollway_headers

log = logging.getLogger("tollway.forward")

# Upstream response headers worth passing on to the client.
_PASS_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "openai-")
_PASS_HEADERS = frozenset({"retry-after", "x-request-id", "request-id", "retry-after-ms"})
_HIDDEN = frozenset({"openai-organization", "openai-project"})  # the provider account's ids

# A chunk hook sees the stream's observer after each network chunk, before the client gets
# it, and may stop the stream by raising a GatewayError (a budget that ran out, say).
ChunkHook = Callable[[Exchange, StreamObserver], None]


def _passed_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    out = {}
    for k, v in upstream.headers.items():
        lk = k.lower()
        if (lk in _PASS_HEADERS or lk.startswith(_PASS_PREFIXES)) and lk not in _HIDDEN:
            out[k] = v
    return out


class Retryable(Exception):
    """This target failed before anything reached the client: the next one may answer."""

    def __init__(self, reason: str, error: GatewayError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class Forward(Stage):
    name = "forward"

    def __init__(self, metrics: Metrics, chunk_hooks: list[ChunkHook] | None = None,
                 retries: RetryConfig | None = None) -> None:
        self.metrics = metrics
        self.chunk_hooks = chunk_hooks or []
        self.retries = retries or RetryConfig()
        self.retry_on = frozenset(self.retries.on)

    async def on_request(self, ex: Exchange) -> web.StreamResponse:
        """Try the chosen model, then its fallbacks, until one answers or the deadline."""
        assert ex.route is not None
        targets = [ex.route, *ex.fallbacks]
        retry = self.retries
        deadline = ex.started + retry.deadline_s
        failure: Retryable | None = None
        for i, route in enumerate(targets):
            last = i == len(targets) - 1
            if i:
                pause = retry.backoff_ms / 1000 * (2 ** (i - 1)) * random.uniform(0.5, 1.5)
                if time.perf_counter() + pause >= deadline:
                    break
                await asyncio.sleep(pause)
            ex.route = route
            try:
                return await self._attempt(ex, route, last, deadline)
            except Retryable as r:
                failure = r
                ex.attempts.append(f"{route.name}: {r.reason}")
                if not last:
                    self.metrics.fallbacks.labels(route.name, targets[i + 1].name,
                                                  r.reason).inc()
        assert failure is not None
        raise failure.error

    async def _attempt(self, ex: Exchange, route: ModelRoute, last: bool, deadline: float,
                       ) -> web.StreamResponse:
        provider = route.provider
        dialect = ex.endpoint.dialect
        if not provider.speaks(dialect.name):
            err = GatewayError(400, "dialect_mismatch",
                               f"the model {route.name!r} is served by a {provider.kind} "
                               f"provider and cannot answer this {dialect.name} endpoint",
                               param="model")
            if last:
                raise err
            raise Retryable("dialect", err)
        body = ex.body
        if body.get("model") != route.upstream_model:
            body["model"] = route.upstream_model
            ex.body_changed = True
        if ex.stream and dialect.prepare(ex.endpoint, body):
            ex.usage_injected = ex.body_changed = True
        strip_usage = ex.usage_injected
        changed = ex.body_changed
        data = orjson.dumps(body) if changed else ex.raw
        url = provider.url(dialect.name, ex.endpoint.path, route.upstream_model)
        headers = provider.request_headers(ex.request.headers, dialect.name)
        headers["Content-Type"] = "application/json"
        timeout = provider.stream_timeout if ex.stream else provider.timeout
        remaining = deadline - time.perf_counter()
        if timeout.total is not None and remaining < timeout.total:
            timeout = aiohttp.ClientTimeout(total=max(0.001, remaining),
                                            sock_connect=timeout.sock_connect)
        ex.upstream_started = time.perf_counter()
        retry_on = self.retry_on
        try:
            upstream = await provider.session.post(url, data=data, headers=headers,
                                                   timeout=timeout)
        except TimeoutError as exc:
            ex.upstream_ended = time.perf_counter()
            self.metrics.upstream_errors.labels(provider.name, "timeout").inc()
            err = GatewayError(504, "upstream_timeout",
                               f"provider {provider.name!r} did not answer in time")
            if last or "timeout" not in retry_on:
                raise err from exc
            raise Retryable("timeout", err) from exc
        except aiohttp.ClientError as exc:
            ex.upstream_ended = time.perf_counter()
            self.metrics.upstream_errors.labels(provider.name, "connect").inc()
            err = GatewayError(502, "upstream_unreachable",
                               f"provider {provider.name!r} could not be reached "
                               f"({type(exc).__name__})")
            if last or "connect" not in retry_on:
                raise err from exc
            raise Retryable("connect", err) from exc
        ex.upstream_status = upstream.status
        status = upstream.status
        if not last and ((status == 429 and "429" in retry_on)
                         or (status >= 500 and "5xx" in retry_on)):
            upstream.release()  # nothing reached the client yet: try the next target
            ex.upstream_ended = time.perf_counter()
            raise Retryable(str(status), GatewayError(
                status, "upstream_error", f"provider {provider.name!r} answered {status}"))
        ctype = upstream.headers.get("Content-Type", "")
        if ex.stream and status < 300 and ctype.startswith("text/event-stream"):
            return await self._stream(ex, upstream, strip_usage)
        return await self._whole(ex, upstream, ctype)

    async def _whole(self, ex: Exchange, upstream: aiohttp.ClientResponse, ctype: str,
                     ) -> web.Response:
        provider = ex.route.provider  # type: ignore[union-attr]
        try:
            payload = await upstream.read()
        except TimeoutError as exc:
            self.metrics.upstream_errors.labels(provider.name, "timeout").inc()
            raise GatewayError(504, "upstream_timeout",
                               f"provider {provider.name!r} did not finish in time") from exc
        except aiohttp.ClientError as exc:
            self.metrics.upstream_errors.labels(provider.name, "dropped").inc()
            raise GatewayError(502, "upstream_dropped",
                               f"provider {provider.name!r} dropped the connection "
                               f"({type(exc).__name__})") from exc
        finally:
            upstream.release()
            ex.upstream_ended = time.perf_counter()
        if upstream.status < 300 and ex.endpoint.billable:
            try:
                parsed = orjson.loads(payload)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict):
                usage = ex.endpoint.dialect.usage(ex.endpoint, parsed)
                if usage is not None:
                    ex.usage, ex.usage_source = usage, "upstream"
        ex.status = upstream.status
        headers = _passed_headers(upstream)
        headers.update(tollway_headers(ex))
        return web.Response(status=upstream.status, body=payload, headers=headers,
                            content_type=(ctype.split(";")[0] or "application/json"))

    async def _stream(self, ex: Exchange, upstream: aiohttp.ClientResponse, strip: bool,
                      ) -> web.StreamResponse:
        dialect = ex.endpoint.dialect
        observer = dialect.observer(ex.endpoint, strip)
        headers = _passed_headers(upstream)
        headers.update(tollway_headers(ex))
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
        response = web.StreamResponse(status=upstream.status, headers=headers)
        response.content_type = "text/event-stream"
        ex.status = upstream.status
        splitter = EventSplitter()
        hooks = self.chunk_hooks
        cut: GatewayError | None = None
        if not await _prepare(response, ex.request):
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
                if out:
                    if not ex.first_token_at and observer.saw_content:
                        ex.first_token_at = time.perf_counter()
                    if not await _write(response, out):
                        ex.client_disconnected = True
                        break
            else:
                if not observer.finished:
                    cut = GatewayError(502, "upstream_stream_truncated",
                                       "the provider ended the stream before it was complete")
        except GatewayError as err:  # a chunk hook stopped the stream
            cut = err
        except TimeoutError:
            cut = GatewayError(504, "upstream_timeout", "the provider stopped sending mid-stream")
            self.metrics.upstream_errors.labels(ex.route.provider.name, "timeout").inc()  # type: ignore[union-attr]
        except aiohttp.ClientError as exc:
            cut = self._upstream_broke(ex, exc)
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
                self._interrupted("client", ex)
        if cut is not None and not ex.client_disconnected:
            ex.stream_truncated = True
            ex.status = cut.status
            ex.error_code = cut.code
            if cut.code.startswith("upstream"):
                self._interrupted("upstream", ex)
            if not await _write(response, dialect.stream_error(cut)):
                ex.client_disconnected = True
        if not ex.client_disconnected:
            try:
                await response.write_eof()
            except ConnectionError:
                ex.client_disconnected = True
        return response

    def _upstream_broke(self, ex: Exchange, exc: Exception) -> GatewayError:
        self.metrics.upstream_errors.labels(ex.route.provider.name, "dropped").inc()  # type: ignore[union-attr]
        return GatewayError(502, "upstream_dropped",
                            f"the provider dropped the stream ({type(exc).__name__})")

    def _interrupted(self, side: str, ex: Exchange) -> None:
        self.metrics.stream_interruptions.labels(side, ex.model_name).inc()


async def _write(response: web.StreamResponse, data: bytes) -> bool:
    """Write to the client; False when it has gone away."""
    try:
        await response.write(data)
    except ConnectionError:
        return False
    return True


async def _prepare(response: web.StreamResponse, request: web.Request) -> bool:
    try:
        await response.prepare(request)
    except ConnectionError:
        return False
    return True
