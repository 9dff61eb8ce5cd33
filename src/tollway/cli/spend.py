"""tollway spend: spend from a running gateway's admin API, as a table or raw JSON."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


def admin_target(args: argparse.Namespace) -> tuple[str, str | None]:
    """The gateway's admin URL and key: the flags, else the config it runs with (the admin
    listener's address, or the main port's when the admin listener is off)."""
    url, key = args.url, args.admin_key
    if url and key:
        return url, key
    try:
        from tollway.config import load_config

        server = load_config(args.config).server
    except Exception:  # no or a broken config: the flags and defaults are all there is
        return url or "http://127.0.0.1:4101", key
    if not url:
        host, port = ((server.admin.host, server.admin.port) if server.admin.enabled
                      else (server.host, server.port))
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        url = f"http://{host}:{port}"
    if not key and server.admin_key and not server.admin_key.startswith("sha256:"):
        key = server.admin_key
    return url, key


def run_spend(args: argparse.Namespace) -> int:
    import httpx

    args.url, args.admin_key = admin_target(args)
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
        return failed(r)
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


def failed(r: httpx.Response) -> int:
    """Say what the admin API refused, in its own words; the exit code of a refusal."""
    try:
        message = r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = r.text[:200]
    print(f"tollway: {r.status_code}: {message}", file=sys.stderr)
    return 1
