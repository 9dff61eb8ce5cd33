"""The command line: every command's arguments, and the dispatch to the module that runs it."""

from __future__ import annotations

import argparse
import os

from tollway.cli import audit, keys
from tollway.cli.check import run_check, run_explain, run_schema
from tollway.cli.serve import run_serve
from tollway.cli.spend import run_spend

DEFAULT_CONFIG = "gateway.yaml"
CONFIG_HELP = "the gateway's config file (default: $TOLLWAY_CONFIG, else %(default)s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollway", description="AgentOps gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("-c", "--config", default=os.environ.get("TOLLWAY_CONFIG", DEFAULT_CONFIG),
                       help=CONFIG_HELP)
    serve.add_argument("--host", help="the address to listen on (default: server.host)")
    serve.add_argument("--port", type=int, help="the port to listen on (default: server.port)")
    serve.add_argument("--workers", type=_positive, metavar="N",
                       help="processes serving the port with SO_REUSEPORT (default: "
                            "server.workers); more than 1 needs state.backend: redis")
    serve.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)  # supervisor's pid
    serve.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    serve.add_argument("--lifeline", type=int, help=argparse.SUPPRESS)  # EOF: supervisor gone
    serve.add_argument("--admin-port", type=int, help=argparse.SUPPRESS)  # the one it holds

    check = sub.add_parser("check", help="validate a config file and exit non-zero on errors")
    check.add_argument("-c", "--config", default=os.environ.get("TOLLWAY_CONFIG", DEFAULT_CONFIG),
                       help=CONFIG_HELP)

    explain = sub.add_parser("explain", help="show which routing rule a request would match "
                             "and where it would go")
    explain.add_argument("-c", "--config",
                         default=os.environ.get("TOLLWAY_CONFIG", DEFAULT_CONFIG),
                         help=CONFIG_HELP)
    explain.add_argument("--agent", default="anonymous",
                         help="the agent making the request (default: %(default)s)")
    explain.add_argument("--team", help="default: the agent's team from the config")
    explain.add_argument("--model", required=True, help="the model the client asks for")
    explain.add_argument("--prompt-tokens", type=int, default=0,
                         help="the prompt's size in tokens (default: %(default)s)")
    explain.add_argument("--tools", action="store_true", help="the request offers tools")
    explain.add_argument("--stream", action="store_true", help="the request is streamed")
    explain.add_argument("--tag", action="append", default=[], help="repeatable")
    explain.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                         help="a request header (repeatable)")
    explain.add_argument("--budget-spent", action="append", default=[], metavar="SCOPE=SHARE",
                         help="e.g. agent=0.85 (share of the budget already spent)")
    explain.add_argument("--at", help="evaluate time windows at this ISO-8601 time")

    schema = sub.add_parser("schema", help="print the JSON Schema of gateway.yaml")
    schema.add_argument("-o", "--output", help="write it to this file instead")

    spend = sub.add_parser("spend", help="print spend from a running gateway")
    spend.add_argument("--by", default="agent",
                       choices=["agent", "team", "model", "tool", "provider", "session", "tag"],
                       help="what to group the spend by (default: %(default)s); model is the "
                            "models alone, tool the HTTP and MCP tools")
    spend.add_argument("--since", help="unix seconds, ISO-8601, or a duration like 24h")
    spend.add_argument("-c", "--config", default=os.environ.get("TOLLWAY_CONFIG", DEFAULT_CONFIG),
                       help="the gateway's config: its port and admin key are used unless "
                            "--url / --admin-key say otherwise (default: %(default)s)")
    spend.add_argument("--url", default=os.environ.get("TOLLWAY_URL"),
                       help="the gateway's admin listener (default: from the config's "
                            "server.admin, or http://127.0.0.1:4101)")
    spend.add_argument("--admin-key", default=os.environ.get("TOLLWAY_ADMIN_KEY"),
                       help="the admin key (default: $TOLLWAY_ADMIN_KEY, else the config's "
                            "server.admin_key when it is not a sha256 digest)")
    spend.add_argument("--json", action="store_true", help="print the raw JSON")

    audit.add_parser(sub)
    keys.add_parser(sub, DEFAULT_CONFIG)

    args = parser.parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:  # `tollway spend | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "audit":
        return audit.run(args)
    if args.command == "keys":
        return keys.run(args)
    if args.command == "serve":
        return run_serve(args)
    if args.command == "check":
        return run_check(args.config)
    if args.command == "explain":
        return run_explain(args)
    if args.command == "schema":
        return run_schema(args.output)
    return run_spend(args)


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n
