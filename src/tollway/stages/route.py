"""Route: the first matching rule picks the model (or a weighted split) and the fallbacks."""

from __future__ import annotations

from tollway.exchange import Exchange
from tollway.observe.metrics import Metrics
from tollway.providers.base import ModelRegistry
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
        t = ex.target
        asked = t.route
        assert asked is not None
        rule = None
        if self.router.rules:
            rule = self.router.decide(context(ex))
        if rule is None:
            names = self.model_fallbacks.get(asked.name, ())
            t.fallbacks = [self.registry.routes[n] for n in names]
            return
        chosen = rule.pick(self.router.rng)
        route = self.registry.routes[chosen] if chosen is not None else asked
        t.route = route
        t.rule = rule.name
        names = rule.fallbacks or self.model_fallbacks.get(route.name, ())
        t.fallbacks = [self.registry.routes[n] for n in names]
        self.metrics.child(self.metrics.routing_decisions, rule.name, asked.name,
                           route.name).inc()


def context(ex: Exchange) -> RouteContext:
    t, caller = ex.target, ex.caller
    return RouteContext(
        agent=caller.agent, team=caller.team, model=t.route.name if t.route else t.requested,
        prompt_tokens=ex.prompt.counted, tools=bool(ex.body.get("tools")),
        stream=ex.stream, tags=caller.tags, headers=ex.request.headers,
        budget_shares=ex.guard.budget_shares or {})
