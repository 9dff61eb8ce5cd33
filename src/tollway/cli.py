"""tollway serve | check | spend."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from tollway import audit_cli
from tollway.config import ConfigError, load_config

log = logging.getLogger("tollway")
DEFAULT_CONFIG = "gateway.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollway", description="AgentOps gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("-c", "--config", default=os.environ.get("TOLLWAY_CONFIG", DEFAULT_CONFIG))
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)

    check = sub.add_parser("check", help="validate a config file and exit non-zero on errors")
    check.add_argument("-c", "--config", default=os.environ.get("TOLLWAY_CONFIG", DEFAULT_CONFIG))

    explain = sub.add_parser("explain", help="show which routing rule a request would match "
                             "and where it would go")
    explain.add_argument("-c", "--config",
                         default=os.environ.get("TOLLWAY_CONFIG", DEFAULT_CONFIG))
    explain.add_argument("--agent", default="anonymous")
    explain.add_argument("--team", help="default: the agent's team from the config")
    explain.add_argument("--model", required=True, help="the model the client asks for")
    explain.add_argument("--prompt-tokens", type=int, default=0)
    explain.add_argument("--tools", action="store_true", help="the request offers tools")
    explain.add_argument("--stream", action="store_true")
    explain.add_argument("--tag", action="append", default=[], help="repeatable")
    explain.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    explain.add_argument("--budget-spent", action="append", default=[], metavar="SCOPE=SHARE",
                         help="e.g. agent=0.85 (share of the budget already spent)")
    explain.add_argument("--at", help="evaluate time windows at this ISO-8601 time")

    schema = sub.add_parser("schema", help="print the JSON Schema of gateway.yaml")
    schema.add_argument("-o", "--output", help="write it to this file instead")

    spend = sub.add_parser("spend", help="print spend from a running gateway")
    spend.add_argument("--by", default="agent",
                       choices=["agent", "team", "model", "provider", "session", "tag"])
    spend.add_argument("--since", help="unix seconds, ISO-8601, or a duration like 24h")
    spend.add_argument("--url", default=os.environ.get("TOLLWAY_URL", "http://127.0.0.1:4100"))
    spend.add_argument("--admin-key", default=os.environ.get("TOLLWAY_ADMIN_KEY"))
    spend.add_argument("--json", action="store_true", help="print the raw JSON")

    audit_cli.add_parser(sub)

    args = parser.parse_args(argv)
    if args.command == "audit":
        return audit_cli.run(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "check":
        return _check(args.config)
    if args.command == "explain":
        return _explain(args)
    if args.command == "schema":
        return _schema(args.output)
    return _spend(args)


def _schema(output: str | None) -> int:
    from tollway.config.schema import schema_text

    text = schema_text()
    if output:
        Path(output).write_text(text)
    else:
        print(text, end="")
    return 0


def _explain(args: argparse.Namespace) -> int:
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


def _check(path: str) -> int:
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


def _serve(args: argparse.Namespace) -> int:
    from tollway.observe.logs import setup_logging

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"tollway: cannot start, the config has errors:\n{exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.server.log_level)
    host = args.host or cfg.server.host
    port = args.port or cfg.server.port
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        return runner.run(_run(cfg, str(Path(args.config).resolve()), host, port))


async def _run(cfg: object, config_path: str, host: str, port: int) -> int:
    from aiohttp import web

    from tollway.app import GATEWAY, build_app
    from tollway.config.model import Config

    assert isinstance(cfg, Config)
    app = build_app(cfg, config_path)
    runner = web.AppRunner(app, access_log=logging.getLogger("aiohttp.access")
                           if cfg.server.access_log else None,
                           shutdown_timeout=cfg.server.drain_timeout_s, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    await site.start()
    log.info("tollway listening on http://%s:%d (config %s)", host, port, config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = app[GATEWAY]
    reloads: set[asyncio.Task[object]] = set()

    def on_sighup() -> None:
        task = asyncio.ensure_future(gateway.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    await stop.wait()
    log.info("draining in-flight requests (up to %.0fs)", cfg.server.drain_timeout_s)
    await runner.cleanup()
    log.info("stopped")
    return 0


def _spend(args: argparse.Namespace) -> int:
    import httpx

    headers = {"Authorization": f"Bearer {args.admin_key}"} if args.admin_key else {}
    params = {"by": args.by}
    if args.since:
        params["since"] = args.since
    try:
        r = httpx.get(f"{args.url.rstrip('/')}/admin/spend", params=params, headers=headers,
                      timeout=10)
    except httpx.HTTPError as exc:
        print(f"tollway: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    if r.status_code != 200:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:200]
        print(f"tollway: {r.status_code}: {message}", file=sys.stderr)
        return 1
    data = r.json()
    if args.json:
        print(r.text)
        return 0
    print(_table(data))
    return 0


def _table(data: dict) -> str:
    by = data["by"]
    cols = [(by, "key"), ("requests", "requests"), ("input", "input_tokens"),
            ("output", "output_tokens"), ("cached", "cached_tokens"), ("cost_usd", "cost_usd")]
    rows = [[str(r[k]) if k != "cost_usd" else f"{r[k]:.6f}" for _, k in cols]
            for r in data["rows"]]
    rows.append(["TOTAL", str(sum(r["requests"] for r in data["rows"])),
                 str(sum(r["input_tokens"] for r in data["rows"])),
                 str(sum(r["output_tokens"] for r in data["rows"])),
                 str(sum(r["cached_tokens"] for r in data["rows"])),
                 f"{data['total_cost_usd']:.6f}"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, (h, _) in enumerate(cols)]
    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    lines = [fmt([h for h, _ in cols]), fmt(["-" * w for w in widths])]
    lines += [fmt(r) for r in rows[:-1]]
    lines += [fmt(["-" * w for w in widths]), fmt(rows[-1])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
