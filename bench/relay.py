"""A bare aiohttp forwarder: the floor for any Python proxy, not a product.

It does what every Python gateway must do at least (accept, read the body, forward it over a
pooled client, send the answer back) and nothing else, so "tollway CPU / relay CPU" isolates
the cost of tollway's own work (parsing, metering, accounting, metrics) from aiohttp's.

    python bench/relay.py --port 4200 --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import gc

import aiohttp
import uvloop
from aiohttp import web

FORWARDED = ("Content-Type", "Authorization")
SESSION = web.AppKey("session", aiohttp.ClientSession)


def build_app(upstream: str) -> web.Application:
    """One catch-all POST route forwarding to ``upstream + path`` over one pooled session."""
    base = upstream.rstrip("/")
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def open_session(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=10_000, keepalive_timeout=30)
        app[SESSION] = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def close_session(app: web.Application) -> None:
        await app[SESSION].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k in FORWARDED if (v := request.headers.get(k)) is not None}
        async with app[SESSION].post(base + request.path_qs, data=body, headers=headers) as up:
            ctype = up.headers.get("Content-Type", "application/octet-stream")
            if not ctype.startswith("text/event-stream"):
                payload = await up.read()
                return web.Response(status=up.status, body=payload,
                                    headers={"Content-Type": ctype})
            resp = web.StreamResponse(status=up.status, headers={"Content-Type": ctype})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000")
    args = parser.parse_args()
    # The collector set as tollway sets it (tollway/ingress/heap.py), so that the ratio
    # measures the gateway's own work and not a difference in tuning (~3.6% of the relay's
    # CPU under wrk).
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    # run_app handles SIGINT/SIGTERM itself and exits cleanly.
    web.run_app(build_app(args.upstream), host=args.host, port=args.port, access_log=None,
                print=None, loop=uvloop.new_event_loop(), shutdown_timeout=1.0)


if __name__ == "__main__":
    main()
