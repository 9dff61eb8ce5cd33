"""Route: the first matching rule picks the model (or a weighted split) and the fallbacks."""

from __future__ import annotations

from tollway.exchange import Exchange
from tollway.observe.metrics import Metrics
from tollway.providers.registry import ModelRegistry
from tollway.routing.rules import RouteContext, Router
from tollway.stages.base import Stage


class Route(Stage):
    name = "route"

    def __init__(self, router: Router, registry: ModelRegistry, metrics: Metrics,
                 fallbacks: dict[str, list[str]]) -> None:
        self.router = router
        self.registry = registry
        self.metrics = metrics
        self.model_fallbacks = fallbacks

    async def on_request(self, ex: Exchange) -> None:
        route = ex.route
        assert route is not None
        rule = None
        if self.router.rules:
            rule = self.router.decide(context(ex))
        if rule is None:
            names = self.model_fallbacks.get(route.name, ())
            ex.fallbacks = [self.registry.routes[n] for n in names]
            return
        target = rule.pick(self.router.rng)
        if target is not None and target != route.name:
            ex.route = self.registry.routes[target]
        ex.rule = rule.name
        names = rule.fallbacks or self.model_fallbacks.get(ex.route.name, ())  # type: ignore[union-attr]
        ex.fallbacks = [self.registry.routes[n] for n in names]
        self.metrics.child(self.metrics.routing_decisions, rule.name, route.name,
                           ex.route.name).inc()  # type: ignore[union-attr]


def context(ex: Exchange) -> RouteContext:
    return RouteContext(
        agent=ex.agent, team=ex.team, model=ex.route.name if ex.route else ex.requested_model,
        prompt_tokens=ex.prompt_tokens_counted, tools=bool(ex.body.get("tools")),
        stream=ex.stream, tags=ex.tags, headers=ex.request.headers,
        budget_shares=ex.budget_shares)
