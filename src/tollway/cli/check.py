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
    print("\n".join(lines))
    return 0 if ok else 1


def run_check(path: str) -> int:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for p in exc.problems:
            print(f"error: {p}", file=sys.stderr)
        print(f"{path}: {len(exc.problems)} error(s)", file=sys.stderr)
        return 1
    extra = ""
    if cfg.tools or cfg.mcp_servers:
        extra += f", {len(cfg.tools)} tools, {len(cfg.mcp_servers)} MCP servers"
    if cfg.policies:
        extra += (f", {len(cfg.policy.rules)} policy rules from {len(cfg.policy.files)} "
                  f"file(s)")
    print(f"{path}: ok ({len(cfg.providers)} providers, {len(cfg.models)} models, "
          f"{len(cfg.agents)} agents{extra})")
    return 0
