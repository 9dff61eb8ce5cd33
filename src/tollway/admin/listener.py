"""The admin listener: the admin API and /metrics on a port of their own
(`server.admin`, 127.0.0.1:4101 by default), so that the public port, and the Service in
front of it, never carries them.

It runs in the gateway's process, on the gateway's loop, started by the main app once the
gateway is up and closed by it after the main port has drained (so an operator can still
watch a drain). Its handlers read `gw.config` and `gw.runtime` per request: a reload
reaches them with nothing to rebuild. Changing `server.admin` itself needs a restart, like
the rest of `server:`.

With `--workers N`, every worker listens on the admin port with SO_REUSEPORT, as on the
main port (the supervisor holds both). /metrics stays correct whichever worker answers: in
multiprocess mode each merges every worker's files, so any of them reports the whole
instance; and the admin API stays up while any worker is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from tollway.admin.api import add_admin_routes
from tollway.admin.auth import admin_error
from tollway.admin.console import add_console_routes
from tollway.ingress.server import GatewayRunner
from tollway.observe.scrape import metrics_handler
from tollway.wire import json_response

if TYPE_CHECKING:
    from tollway.gateway import Gateway

log = logging.getLogger("tollway")

# In-flight admin requests get this long (at most) once the main port has drained.
ADMIN_DRAIN_S = 5.0


def build_admin_app(gw: Gateway) -> web.Application:
    """The admin listener's app: /admin/..., /metrics, /healthz, and the console."""
    cfg = gw.config.server
    app = web.Application(client_max_size=int(cfg.max_body_mb * 1024 * 1024))
    add_admin_routes(app, gw)
    app.router.add_get("/metrics", metrics_handler(gw))
    app.router.add_get("/healthz", _healthz)
    add_console_routes(app, gw)  # the operator console (before the catch-all)
    app.router.add_route("*", r"/{tail:[\s\S]*}", _not_found)
    return app


async def _healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _not_found(request: web.Request) -> web.Response:
    return admin_error(404, f"no such endpoint: {request.method} {request.path}",
                       "unknown_endpoint")


class AdminListener:
    """The admin app served on host:port; `port` is the bound one once started (port 0
    picks a free one)."""

    def __init__(self, gw: Gateway, host: str, port: int, reuse_port: bool = False) -> None:
        self.gw = gw
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self._runner: GatewayRunner | None = None

    async def start(self) -> None:
        server = self.gw.config.server
        runner = GatewayRunner(build_admin_app(self.gw), server,
                               access_log=logging.getLogger("aiohttp.access")
                               if server.access_log else None,
                               shutdown_timeout=min(ADMIN_DRAIN_S, server.drain_timeout_s),
                               handle_signals=False)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self.host, self.port, backlog=128, reuse_address=True,
                           reuse_port=True if self.reuse_port else None)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise OSError(exc.errno, f"cannot listen on {self.host}:{self.port} for the "
                          f"admin listener (server.admin): {exc.strerror or exc}") from exc
        sockets = site._server.sockets if site._server else ()  # type: ignore[union-attr]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("admin listener (admin API, /metrics) on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def listening(self) -> bool:
        return self._runner is not None
