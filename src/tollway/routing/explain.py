"""`tollway explain`: which rule a request would match, why the others did not, and where
the request would go."""

from __future__ import annotations

from multidict import CIMultiDict

from tollway.config.model import Config
from tollway.routing.rules import RouteContext, Router


def explain(cfg: Config, *, agent: str, team: str | None, model: str, prompt_tokens: int = 0,
            tools: bool = False, stream: bool = False, tags: tuple[str, ...] = (),
            headers: dict[str, str] | None = None, budget_shares: dict[str, float] | None = None,
            now: float | None = None) -> tuple[list[str], bool]:
    """Lines to print, and whether the request would be served at all."""
    if model not in cfg.models:
        return [f"model {model!r} is not configured; known: {', '.join(sorted(cfg.models))}"
                ], False
    if team is None:
        team = cfg.agents[agent].team if agent in cfg.agents else "default"
    ctx = RouteContext(agent=agent, team=team, model=model, prompt_tokens=prompt_tokens,
                       tools=tools, stream=stream, tags=tags,
                       headers=CIMultiDict(headers or {}), budget_shares=budget_shares or {},
                       now=now)
    router = Router(cfg.routing)
    lines = [f"request: agent={agent} team={team} model={model} prompt_tokens={prompt_tokens} "
             f"tools={tools} stream={stream} tags={list(tags)}"]
    matched = None
    for name, failing in router.explain(ctx):
        if failing is None:
            lines.append(f"  rule {name}: MATCHES")
            matched = next(r for r in router.rules if r.name == name)
        else:
            lines.append(f"  rule {name}: no (it needs: {failing})")
    if not router.rules:
        lines.append("  (no routing rules)")
    fallbacks = cfg.models[model].fallbacks
    if matched is None:
        targets = [(model, 1.0)]
        lines.append(f"no rule matches: the request goes to {model!r} as asked")
    else:
        weights = matched.weights or [1.0] * len(matched.targets)
        targets = list(zip(matched.targets, weights, strict=True)) or [(model, 1.0)]
        total = sum(w for _, w in targets)
        fallbacks = matched.fallbacks or cfg.models[targets[0][0]].fallbacks
        lines.append(f"rule {matched.name!r} decides:")
    total = sum(w for _, w in targets)
    for name, weight in targets:
        m = cfg.models[name]
        share = f"{100 * weight / total:.1f}% -> " if len(targets) > 1 else "-> "
        lines.append(f"  {share}{name} (provider {m.provider}, upstream model "
                     f"{m.model or name})")
    if fallbacks:
        lines.append(f"  fallbacks in order: {', '.join(fallbacks)}")
    return lines, True
