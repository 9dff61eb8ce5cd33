"""Count prompt tokens before forwarding, so guards can act before money is spent."""

from __future__ import annotations

from tollway.exchange import Exchange
from tollway.stages.base import Stage
from tollway.tokens.counter import TokenCounter


class Meter(Stage):
    name = "meter"

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter

    async def on_request(self, ex: Exchange) -> None:
        route = ex.target.route
        assert route is not None
        messages, loose = ex.endpoint.dialect.prompt(ex.endpoint, ex.body)
        raw = self.counter.count_prompt(route.encoding, messages, loose)
        ex.prompt.raw = raw
        ex.prompt.counted = (
            self.counter.estimate(route.name, route.tokenizer_factor, raw)
            if route.estimated else raw)

    async def on_response(self, ex: Exchange) -> None:
        route, out = ex.target.route, ex.outcome
        if (route is not None and route.estimated and out.usage is not None
                and out.usage_source == "upstream"):
            self.counter.calibrate(route.name, route.tokenizer_factor, ex.prompt.raw,
                                   out.usage.total_input)
