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
from aiohttp import web

from tollway.config.model import RetryConfig
from tollway.errors import GatewayError
from tollway.exchange import Exchange
from tollway.observe.metrics import Metrics
from tollway.providers.base import Deployment
from tollway.providers.responses_bridge import outgoing as bridged
from tollway.routing.balance import order
from tollway.routing.breakers import BreakerBoard
from tollway.stages import relay
from tollway.stages.base import Stage
from tollway.wire import retry_after as parse_retry_after


class Retryable(Exception):
    """This target failed before anything reached the client: the next one may answer."""

    def __init__(self, reason: str, error: GatewayError,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error
        self.retry_after = retry_after


class Forward(Stage):
    name = "forward"

    def __init__(self, metrics: Metrics, retries: RetryConfig | None = None,
                 board: BreakerBoard | None = None, default_max_tokens: int = 4096) -> None:
        self.metrics = metrics
        self.retries = retries or RetryConfig()
        self.retry_on = frozenset(self.retries.on)
        self.board = board
        self.default_max_tokens = default_max_tokens
        self.rng = random.Random()

    async def on_request(self, ex: Exchange) -> web.StreamResponse:
        t, up = ex.target, ex.upstream
        assert t.route is not None
        plan = [(r, d) for r in (t.route, *t.fallbacks) for d in order(r, self.rng)]
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
            t.route = route
            up.provider = dep.provider.name
            up.kind = dep.provider.kind
            up.model = dep.upstream_model
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
                return await self._attempt(ex, dep, last, deadline, probe)
            except Retryable as r:
                failure = r
                nxt = plan[i + 1][0].name if not last else None
                if nxt is not None:
                    self.metrics.fallbacks.labels(route.name, nxt, r.reason).inc()
        if failure is None:
            raise GatewayError(504, "deadline_exceeded", "no target answered in time")
        raise failure.error

    def _skip(self, ex: Exchange, dep: Deployment, wait: float,
              previous: Retryable | None) -> Retryable:
        if previous is not None and previous.reason == "breaker_open":
            wait = min(wait, previous.error.retry_after or wait)
        return Retryable("breaker_open", GatewayError(
            503, "breaker_open", f"the circuit breaker of {dep.target} is open after repeated "
            f"failures; it will be tried again in {wait:.0f}s", retry_after=max(1.0, wait)))

    async def _attempt(self, ex: Exchange, dep: Deployment, last: bool,
                       deadline: float, probe: bool) -> web.StreamResponse:
        start = time.perf_counter()
        dep.inflight += 1
        ok = False
        retry_after: float | None = None
        try:
            response = await self._send(ex, dep, last, deadline)
            status = ex.outcome.status
            ok = status < 500 and status != 429
            if not ok and status in (429, 503):
                retry_after = parse_retry_after(response.headers)
            return response
        except Retryable as r:
            retry_after = r.retry_after
            raise
        finally:
            dep.inflight -= 1
            latency = (ex.upstream.headers_at or time.perf_counter()) - start
            if ok:
                dep.observe_latency(latency)
            if self.board is not None:
                outcome = self.board.outcome(dep, ok, latency, probe, retry_after)
                if outcome is not None:
                    ex.upstream.breaker_outcomes += (outcome,)

    async def _send(self, ex: Exchange, dep: Deployment, last: bool, deadline: float,
                    ) -> web.StreamResponse:
        provider = dep.provider
        up, out = ex.upstream, ex.outcome
        if provider.authorizes:
            try:
                await provider.authorize()
            except GatewayError as err:  # no token: like an upstream that cannot be reached
                if last or "connect" not in self.retry_on:
                    out.status = err.status
                    raise
                raise Retryable("connect", err) from err
        req = bridged(provider, ex, dep.upstream_model, self.default_max_tokens)
        timeout = provider.stream_timeout if ex.stream else provider.timeout
        remaining = deadline - time.perf_counter()
        if timeout.total is not None and remaining < timeout.total:
            timeout = aiohttp.ClientTimeout(total=max(0.001, remaining),
                                            sock_connect=timeout.sock_connect)
        up.started = time.perf_counter()
        try:
            upstream = await provider.session.post(req.url, data=req.data, headers=req.headers,
                                                   timeout=timeout)
        except TimeoutError as exc:
            up.ended = time.perf_counter()
            self.metrics.upstream_errors.labels(provider.name, "timeout").inc()
            err = GatewayError(504, "upstream_timeout",
                               f"provider {provider.name!r} did not answer in time")
            if last or "timeout" not in self.retry_on:
                out.status = 504
                raise err from exc
            raise Retryable("timeout", err) from exc
        except aiohttp.ClientError as exc:
            up.ended = time.perf_counter()
            self.metrics.upstream_errors.labels(provider.name, "connect").inc()
            err = GatewayError(502, "upstream_unreachable",
                               f"provider {provider.name!r} could not be reached "
                               f"({type(exc).__name__})")
            if last or "connect" not in self.retry_on:
                out.status = 502
                raise err from exc
            raise Retryable("connect", err) from exc
        up.headers_at = time.perf_counter()
        status = upstream.status
        if not last and ((status == 429 and "429" in self.retry_on)
                         or (status >= 500 and "5xx" in self.retry_on)):
            upstream.release()  # nothing reached the client yet: try the next target
            up.ended = time.perf_counter()
            raise Retryable(str(status), GatewayError(
                status, "upstream_error", f"provider {provider.name!r} answered {status}"),
                retry_after=parse_retry_after(upstream.headers) if status in (429, 503) else None)
        ctype = upstream.headers.get("Content-Type", "")
        tr, wire = req.translation, req.wire
        if ex.stream and status < 300 and (ctype.startswith("text/event-stream") or (
                wire is not None and wire.streams(ctype))):
            return await relay.stream(ex, upstream, req.strip_usage, tr, self.metrics, provider,
                                      wire)
        return await relay.whole(ex, upstream, ctype, tr, self.metrics, provider, wire)
