"""Settle every exchange: usage (upstream's, or counted when a stream was cut), cost, spend,
metrics. It wraps the whole chain, so refusals and cut streams are settled too."""

from __future__ import annotations

import logging
import time

from tollway.exchange import Exchange, Usage
from tollway.observe.metrics import Metrics
from tollway.stages.base import Stage
from tollway.state.base import State, StepRecord
from tollway.tokens.counter import TokenCounter

log = logging.getLogger("tollway.account")


class Account(Stage):
    name = "account"

    def __init__(self, state: State, metrics: Metrics, counter: TokenCounter) -> None:
        self.state = state
        self.metrics = metrics
        self.counter = counter

    async def on_response(self, ex: Exchange) -> None:
        if ex.accounted:
            return
        ex.accounted = True
        ex.finished_at = time.perf_counter()
        total = ex.finished_at - ex.started
        route = ex.route
        if route is not None and ex.upstream_started and ex.endpoint.billable:
            self._settle_usage(ex)
            u = ex.usage
            if u is not None:
                ex.cost_usd = route.cost(u.input, u.output, u.cached, u.cache_write)
                ex.response_headers["x-tollway-cost-usd"] = f"{ex.cost_usd:.8f}"
        self.metrics.observe(ex, total)
        if ex.session and route is not None:
            try:
                await self.state.record(self._step(ex, total))
            except Exception:
                log.exception("could not record spend of request %s", ex.request_id)

    def _settle_usage(self, ex: Exchange) -> None:
        """Upstream usage is authoritative; when a stream was cut before it, count."""
        if ex.usage_source == "upstream":
            return
        if ex.usage_source == "none" and not ex.stream:
            return  # an error answer: nothing was generated
        route = ex.route
        assert route is not None
        partial = ex.usage or Usage()
        text = ex.completion_text() if ex.completion_text else ""
        counted_out = self.counter.count_text(route.encoding, text) if text else 0
        if route.estimated:
            counted_out = self.counter.estimate(route.name, route.tokenizer_factor, counted_out)
        input_ = partial.input if partial.total_input else ex.prompt_tokens_counted
        ex.usage = Usage(input=input_, output=max(partial.output, counted_out),
                         cached=partial.cached, cache_write=partial.cache_write)
        ex.usage_source = "counted"
        self.metrics.counted_usage.labels(route.name).inc()

    def _step(self, ex: Exchange, total: float) -> StepRecord:
        u = ex.usage or Usage()
        route = ex.route
        assert route is not None
        return StepRecord(
            request_id=ex.request_id, time=ex.wall_start, agent=ex.agent, team=ex.team,
            session=ex.session, endpoint=ex.endpoint.name, model=route.name,
            requested_model=ex.requested_model, provider=route.provider.name,
            status=ex.status, tags=ex.tags, rule=ex.rule, cache=ex.cache, stream=ex.stream,
            error_code=ex.error_code, input_tokens=u.input, output_tokens=u.output,
            cached_tokens=u.cached, cache_write_tokens=u.cache_write,
            prompt_tokens_counted=ex.prompt_tokens_counted, usage_source=ex.usage_source,
            cost_usd=ex.cost_usd, latency_s=round(total, 6),
            ttft_s=round(ex.first_token_at - ex.started, 6) if ex.first_token_at else None)
