"""`tollway keys create|list|rotate|revoke`: runtime virtual keys through a running gateway's
admin API (its URL and admin key found as `tollway spend` finds them).

The secret of `create` and `rotate` is printed once, on stdout, and nowhere else; the rest
goes to stderr, so `tollway keys create --agent bot > key.txt` keeps only the secret.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from tollway.cli.spend import admin_target, failed


def add_parser(sub: Any, default_config: str) -> None:
    keys = sub.add_parser("keys", help="create, list, rotate and revoke runtime virtual keys")
    what = keys.add_subparsers(dest="keys_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config",
                       default=os.environ.get("TOLLWAY_CONFIG", default_config),
                       help="the gateway's config (its port and admin key)")
        p.add_argument("--url", default=os.environ.get("TOLLWAY_URL"),
                       help="the gateway's admin listener (default: $TOLLWAY_URL, else from "
                            "the config)")
        p.add_argument("--admin-key", default=os.environ.get("TOLLWAY_ADMIN_KEY"),
                       help="the admin key (default: $TOLLWAY_ADMIN_KEY, else the config's)")
        p.add_argument("--json", action="store_true", help="print the raw JSON")

    create = what.add_parser("create", help="make a key for an agent; prints its secret once")
    create.add_argument("--agent", required=True, help="the agent the key speaks for")
    create.add_argument("--expires-in", metavar="DURATION",
                        help="e.g. 3600, 90m, 24h, 30d")
    create.add_argument("--model", action="append", dest="models", metavar="GLOB",
                        help="a model it may use (repeatable; default: any its agent may)")
    create.add_argument("--tool", action="append", dest="tools", metavar="GLOB",
                        help="a tool it may call (repeatable)")
    create.add_argument("--budget-usd-day", type=float,
                        help="the key's own daily budget in USD")
    create.add_argument("--rpm", type=int, help="the key's own requests per minute")
    create.add_argument("--label", help="a note shown in listings (never the key)")
    common(create)
    listing = what.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--agent", help="only this agent's keys")
    common(listing)
    rotate = what.add_parser("rotate", help="a new secret for a key; prints it once")
    rotate.add_argument("id", help="the key's id (from keys list)")
    rotate.add_argument("--grace", metavar="DURATION", default="0",
                        help="how long the old secret keeps working (default: 0)")
    common(rotate)
    revoke = what.add_parser("revoke", help="refuse every secret of a key from now on")
    revoke.add_argument("id", help="the key's id (from keys list)")
    common(revoke)


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise SystemExit(f"tollway: {text!r} is not a duration (e.g. 90s, 15m, 24h, 7d)"
                         ) from None


def run(args: argparse.Namespace) -> int:
    import httpx

    url, admin_key = admin_target(args)
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    base = url.rstrip("/") + "/admin/keys"
    cmd = args.keys_command
    body: dict[str, Any] | None = None
    if cmd == "create":
        body = {"agent": args.agent}
        for name in ("models", "tools", "budget_usd_day", "rpm", "label"):
            if getattr(args, name) is not None:
                body[name] = getattr(args, name)
        if args.expires_in:
            body["expires_in_s"] = _seconds(args.expires_in)
        method, path = "POST", base
    elif cmd == "list":
        method, path = "GET", base
    elif cmd == "rotate":
        method, path, body = "POST", f"{base}/{args.id}/rotate", {
            "grace_s": _seconds(args.grace)}
    else:
        method, path = "DELETE", f"{base}/{args.id}"
    try:
        r = httpx.request(method, path, json=body, headers=headers, timeout=10,
                          params={"agent": args.agent} if cmd == "list" and args.agent else None)
    except httpx.HTTPError as exc:
        print(f"tollway: cannot reach {url}: {exc}", file=sys.stderr)
        return 2
    if r.status_code >= 300:
        return failed(r)
    data = r.json()
    if args.json:
        print(r.text)
        return 0
    if cmd == "list":
        print(_table(data["keys"]))
        return 0
    secret = data.pop("secret", None)
    print(_describe(data), file=sys.stderr)
    if secret is not None:
        print("the secret below is shown once; store it now", file=sys.stderr)
        print(secret)
    return 0


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))


def _describe(k: dict[str, Any]) -> str:
    limits = {n: k[n] for n in ("models", "tools", "budget_usd_day", "rpm") if k.get(n)}
    extra = f" grace until {_when(k['grace_until'])}" if k.get("grace_until") else ""
    return (f"{k['id']}  agent={k['agent']}  {k['status']}  expires={_when(k['expires'])}"
            f"{extra}  {json.dumps(limits) if limits else ''}").rstrip()


def _table(keys: list[dict[str, Any]]) -> str:
    cols = ["id", "agent", "status", "created", "expires", "models", "rpm", "budget", "label"]
    rows = [[k["id"], k["agent"], k["status"], _when(k["created"]), _when(k["expires"]),
             ",".join(k["models"]) if k["models"] is not None else "*",
             str(k["rpm"] or "-"), f"{k['budget_usd_day']:g}" if k["budget_usd_day"] else "-",
             k["label"]] for k in keys]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
