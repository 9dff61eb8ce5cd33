"""Forward: try the chosen model's deployments, then its fallbacks, until one answers.

A target is skipped while its circuit breaker is open. A connect error, a timeout, a 429 or
a 5xx (as `retries.on` says) moves on to the next target after a jittered backoff, within
one deadline for the whole request; a stream is only retried before anything reached the
client. The original bytes are sent unless something really changed the body (a model
alias, usage for streams, a translation to the provider's dialect).
"""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import orjson
from aiohttp import web

from tollway.config.model import RetryConfig
from tollway.errors import GatewayError
from tollway.exchange import Exchange
from tollway.observe.metrics import Metrics
from tollway.providers.registry import Deployment, ModelRoute
from tollway.routing.balance import order
from tollway.routing.breakers import BreakerBoard
from tollway.stages import relay
from tollway.stages.base import Stage
from tollway.stages.relay import ChunkHook
from tollway.wire import retry_after


class Retryable(Exception):
    """This target failed before anything reached the client: the next one may answer."""

    def __init__(self, reason: str, error: GatewayError,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error
        self.retry_after = retry_after


def _with_member(raw: bytes, member: bytes) -> bytes:
    """A JSON object's bytes with one more member (not already there) before its brace."""
    end = raw.rstrip()
    return end[:-1] + b"," + member + b"}"


class Forward(Stage):
    name = "forward"

    def __init__(self, metrics: Metrics, chunk_hooks: list[ChunkHook] | None = None,
                 retries: RetryConfig | None = None, board: BreakerBoard | None = None,
                 default_max_tokens: int = 4096) -> None:
        self.metrics = metrics
        self.chunk_hooks = chunk_hooks or []
        self.retries = retries or RetryConfig()
        self.retry_on = frozenset(self.retries.on)
        self.board = board
        self.default_max_tokens = default_max_tokens
        self.rng = random.Random()

    async def on_request(self, ex: Exchange) -> web.StreamResponse:
        assert ex.route is not None
        plan = [(r, d) for r in (ex.route, *ex.fallbacks) for d in order(r, self.rng)]
        deadline = ex.started + self.retries.deadline_s
        failure: Retryable | None = None
        for i, (route, dep) in enumerate(plan):
            last = i == len(plan) - 1
            if failure is not None and failure.reason != "breaker_open":
                pause = self.retries.backoff_ms / 1000 * random.uniform(0.5, 1.5) * (
                    2 ** min(i - 1, 6))
                if time.perf_counter() + pause >= deadline:
                    break
                await asyncio.sleep(pause)
            ex.route = route
            ex.provider_name = dep.provider.name
            ex.provider_kind = dep.provider.kind
            ex.upstream_model = dep.upstream_model
            probe = False
            if self.board is not None and dep.breaker is not None:
                allowed, probe, wait = await self.board.check(dep)
                if not allowed:
                    failure = self._skip(ex, dep, wait, failure)
                    if not last:
                        self.metrics.fallbacks.labels(route.name, plan[i + 1][0].name,
                                                      "breaker_open").inc()
                    continue
            try:
                return await self._attempt(ex, route, dep, last, deadline, probe)
            except Retryable as r:
                failure = r
                ex.attempts.append(f"{dep.target}: {r.reason}")
                nxt = plan[i + 1][0].name if not last else None
                if nxt is not None:
                    self.metrics.fallbacks.labels(route.name, nxt, r.reason).inc()
        if failure is None:
            raise GatewayError(504, "deadline_exceeded", "no target answered in time")
        raise failure.error

    def _skip(self, ex: Exchange, dep: Deployment, wait: float,
              previous: Retryable | None) -> Retryable:
        ex.attempts.append(f"{dep.target}: breaker_open")
        if previous is not None and previous.reason == "breaker_open":
            wait = min(wait, previous.error.retry_after or wait)
        return Retryable("breaker_open", GatewayError(
            503, "breaker_open", f"the circuit breaker of {dep.target} is open after repeated "
            f"failures; it will be tried again in {wait:.0f}s", retry_after=max(1.0, wait)))

    async def _attempt(self, ex: Exchange, route: ModelRoute, dep: Deployment, last: bool,
                       deadline: float, probe: bool) -> web.StreamResponse:
        start = time.perf_counter()
        dep.inflight += 1
        ok = False
        retry_after: float | None = None
        try:
            response = await self._send(ex, route, dep, last, deadline)
            ok = ex.status < 500 and ex.status != 429
            if not ok and ex.status in (429, 503):
                retry_after = retry_after(response.headers)
            return response
        except Retryable as r:
            retry_after = r.retry_after
            raise
        finally:
            dep.inflight -= 1
            latency = (ex.upstream_headers_at or time.perf_counter()) - start
            if ok:
                dep.observe_latency(latency)
            if self.board is not None:
                outcome = self.board.outcome(dep, ok, latency, probe, retry_after)
                if outcome is not None:
                    ex.breaker_outcomes.append(outcome)

    async def _send(self, ex: Exchange, route: ModelRoute, dep: Deployment, last: bool,
                    deadline: float) -> web.StreamResponse:
        provider = dep.provider
        translated = relay.translation(ex.endpoint, provider.kind, ex, dep.upstream_model,
                                       self.default_max_tokens)
        strip_usage = False
        if translated is not None:
            tr, up_body = translated
            endpoint = tr.upstream
            data = orjson.dumps(up_body)
        else:
            tr = None
            endpoint = ex.endpoint
            body = ex.body
            if body.get("model") != dep.upstream_model:
                body["model"] = dep.upstream_model
                ex.body_changed = True
            had_options = "stream_options" in body
            if ex.stream and endpoint.dialect.prepare(endpoint, body):
                ex.usage_injected = True
                if had_options or ex.body_changed:
                    ex.body_changed = True
                else:
                    # Only a new member to add: append it to the original bytes instead of
                    # serialising the whole (often long) conversation again.
                    ex.raw = _with_member(ex.raw, b'"stream_options":{"include_usage":true}')
            strip_usage = ex.usage_injected
            data = orjson.dumps(body) if ex.body_changed else ex.raw
        url = provider.url(endpoint.dialect.name, endpoint.path, dep.upstream_model)
        headers = provider.request_headers(ex.request.headers, endpoint.dialect.name)
        headers["Content-Type"] = "application/json"
        timeout = provider.stream_timeout if ex.stream else provider.timeout
        remaining = deadline - time.perf_counter()
        if timeout.total is not None and remaining < timeout.total:
            timeout = aiohttp.ClientTimeout(total=max(0.001, remaining),
                                            sock_connect=timeout.sock_connect)
        ex.upstream_started = time.perf_counter()
        try:
            upstream = await provider.session.post(url, data=data, headers=headers,
                                                   timeout=timeout)
        except TimeoutError as exc:
            ex.upstream_ended = time.perf_counter()
            self.metrics.upstream_errors.labels(provider.name, "timeout").inc()
            err = GatewayError(504, "upstream_timeout",
                               f"provider {provider.name!r} did not answer in time")
            if last or "timeout" not in self.retry_on:
                ex.status = 504
                raise err from exc
            raise Retryable("timeout", err) from exc
        except aiohttp.ClientError as exc:
            ex.upstream_ended = time.perf_counter()
            self.metrics.upstream_errors.labels(provider.name, "connect").inc()
            err = GatewayError(502, "upstream_unreachable",
                               f"provider {provider.name!r} could not be reached "
                               f"({type(exc).__name__})")
            if last or "connect" not in self.retry_on:
                ex.status = 502
                raise err from exc
            raise Retryable("connect", err) from exc
        ex.upstream_headers_at = time.perf_counter()
        status = upstream.status
        if not last and ((status == 429 and "429" in self.retry_on)
                         or (status >= 500 and "5xx" in self.retry_on)):
            upstream.release()  # nothing reached the client yet: try the next target
            ex.upstream_ended = time.perf_counter()
            raise Retryable(str(status), GatewayError(
                status, "upstream_error", f"provider {provider.name!r} answered {status}"),
                retry_after=retry_after(upstream.headers) if status in (429, 503) else None)
        ctype = upstream.headers.get("Content-Type", "")
        if ex.stream and status < 300 and ctype.startswith("text/event-stream"):
            return await relay.stream(ex, upstream, strip_usage, tr, self.chunk_hooks,
                                      self.metrics, provider.name)
        return await relay.whole(ex, upstream, ctype, tr, self.metrics, provider.name)
