"""Prompt tokens, counted before forwarding when a guard, a rule or an estimate needs them
(before money is spent), and only then."""

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
        dialect, endpoint, body, counter = ex.endpoint.dialect, ex.endpoint, ex.body, self.counter

        def count() -> tuple[int, int]:
            messages, loose = dialect.prompt(endpoint, body)
            raw = counter.count_prompt(route.encoding, messages, loose)
            counted = (counter.estimate(route.name, route.tokenizer_factor, raw)
                       if route.estimated else raw)
            return counted, raw

        ex.prompt.defer(count)

    async def on_response(self, ex: Exchange) -> None:
        # A count that was needed anyway is compared with upstream's; otherwise a sample
        # keeps the factor learning (the first answers of a model, then one in
        # SAMPLE_EVERY) for the estimates that budgets and usage-less answers will need.
        route, out = ex.target.route, ex.outcome
        if (route is not None and route.estimated and out.usage is not None
                and out.usage_source == "upstream"
                and (ex.prompt.known or self.counter.sample(route.name))):
            self.counter.calibrate(route.name, route.tokenizer_factor, ex.prompt.raw,
                                   out.usage.total_input)
