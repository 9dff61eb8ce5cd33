"""tollway check | explain | schema: the commands that read the config (or its model) and exit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tollway.config import ConfigError, load_config


def run_schema(output: str | None) -> int:
    from tollway.config.schema import schema_text

    text = schema_text()
    if output:
        Path(output).write_text(text)
    else:
        print(text, end="")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from datetime import datetime

    from tollway.routing.explain import explain

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        headers = dict(h.split("=", 1) for h in args.header)
        shares = {k: float(v) for k, v in (b.split("=", 1) for b in args.budget_spent)}
        at = datetime.fromisoformat(args.at.replace("Z", "+00:00")).timestamp() if args.at \
            else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines, ok = explain(cfg, agent=args.agent, team=args.team, model=args.model,
                        prompt_tokens=args.prompt_tokens, tools=args.tools, stream=args.stream,
                        tags=tuple(args.tag), headers=headers, budget_shares=shares, now=at)
    lines += _guardrail_lines(cfg, args.agent, args.team, args.model)
    print("\n".join(lines))
    return 0 if ok else 1


def _guardrail_lines(cfg: object, agent: str, team: str | None, model: str) -> list[str]:
    """Which guardrail rules would look at this agent's requests for `model`."""
    from tollway.policy.guardrails import GuardrailRules

    rules = cfg.policy.guardrails  # type: ignore[attr-defined]
    if not rules:
        return []
    if team is None:
        a = cfg.agents.get(agent)  # type: ignore[attr-defined]
        team = a.team if a is not None else "default"
    book = GuardrailRules(rules)
    out = ["guardrails:"]
    for where in ("prompt", "tool_results", "answer"):
        app = book.applicable(where, agent, team, model)
        names = [f"{r.name} ({'/'.join(r.detectors)} -> {r.action})" for r in app.rules]
        out.append(f"  {where}: {', '.join(names) if names else 'none'}")
    tools = [r.name for r in rules if {"tool_args", "tool_results"} & set(r.on)
             and r.tools is not None]
    if tools:
        out.append(f"  tool calls: also {', '.join(tools)} (on the tools they name)")
    return out


def run_check(path: str) -> int:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for p in sorted(exc.problems, key=lambda p: (p.file, p.line or 0)):
            print(f"error: {p}", file=sys.stderr)
        print(f"{path}: {len(exc.problems)} error(s)", file=sys.stderr)
        return 1
    extra = ""
    if cfg.tools or cfg.mcp_servers:
        extra += f", {len(cfg.tools)} tools, {len(cfg.mcp_servers)} MCP servers"
    if cfg.policies:
        extra += (f", {len(cfg.policy.rules)} policy rules from {len(cfg.policy.files)} "
                  f"file(s)")
    if cfg.policy.guardrails:
        from tollway.guardrails.engine import Guardrails

        try:  # builds the detectors: a missing package or entity is found here, not live
            g = Guardrails(cfg.guardrails, cfg.policy.guardrails)
        except (ValueError, ImportError) as exc:
            print(f"error: guardrails: {exc}", file=sys.stderr)
            print(f"{path}: 1 error(s)", file=sys.stderr)
            return 1
        extra += (f", {len(cfg.policy.guardrails)} guardrail rules "
                  f"({', '.join(sorted(g.detectors))})")
    print(f"{path}: ok ({len(cfg.providers)} providers, {len(cfg.models)} models, "
          f"{len(cfg.agents)} agents{extra})")
    return 0
