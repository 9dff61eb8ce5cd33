"""Settle usage and cost right after the answer, before the guard reconciles budgets.

It sits just before forward, so its response hook runs first: upstream usage when the
provider gave it, otherwise (a cut stream) the prompt as counted plus the streamed text
counted now.
"""

from __future__ import annotations

from tollway.exchange import Exchange, Usage
from tollway.observe.metrics import Metrics
from tollway.stages.base import Stage
from tollway.tokens.counter import TokenCounter


class Price(Stage):
    name = "price"

    def __init__(self, metrics: Metrics, counter: TokenCounter) -> None:
        self.metrics = metrics
        self.counter = counter

    async def on_response(self, ex: Exchange) -> None:
        route = ex.target.route
        if route is None or not ex.upstream.started or not ex.endpoint.billable:
            return
        self._settle_usage(ex)
        out = ex.outcome
        u = out.usage
        if u is not None:
            out.cost_usd = route.cost(u.input, u.output, u.cached, u.cache_write)
            ex.response_headers["x-tollway-cost-usd"] = f"{out.cost_usd:.8f}"

    def _settle_usage(self, ex: Exchange) -> None:
        out = ex.outcome
        if out.usage_source == "upstream":
            return
        if out.usage_source == "none":
            return  # an error answer, or a stream that failed before its first byte
        route = ex.target.route
        assert route is not None
        partial = out.usage or Usage()
        text = out.text() if out.text else ""
        counted_out = self.counter.count_text(route.encoding, text) if text else 0
        if route.estimated:
            counted_out = self.counter.estimate(route.name, route.tokenizer_factor, counted_out)
        input_ = partial.input if partial.total_input else ex.prompt.counted
        out.usage = Usage(input=input_, output=max(partial.output, counted_out),
                          cached=partial.cached, cache_write=partial.cache_write)
        out.usage_source = "counted"
        self.metrics.counted_usage.labels(route.name).inc()
