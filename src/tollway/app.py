"""The aiohttp application of the main (public) port: the client endpoints, the tool and MCP
routes, the model list and health, in front of one Gateway. The admin API and /metrics are
on the admin listener (admin/listener.py), which this app starts and stops with the
gateway; with `server.admin.enabled: false` they are served here instead, as they were
before there was an admin listener."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tollway.admin.api import add_admin_routes
from tollway.admin.console import add_console_routes
from tollway.admin.listener import AdminListener
from tollway.config.model import Config
from tollway.errors import GatewayError
from tollway.gateway import Gateway
from tollway.ingress.safety import last_resort
from tollway.observe.scrape import metrics_handler
from tollway.protocols import anthropic, openai
from tollway.protocols.base import Endpoint
from tollway.tools.mcp.messages import rpc_error
from tollway.wire import json_response

GATEWAY = web.AppKey("gateway", Gateway)
ADMIN_LISTENER = web.AppKey("admin_listener", AdminListener)

ROUTES: dict[str, Endpoint] = {
    "/v1/chat/completions": openai.CHAT,
    "/v1/completions": openai.COMPLETIONS,
    "/v1/embeddings": openai.EMBEDDINGS,
    "/v1/responses": openai.RESPONSES,
    "/v1/messages": anthropic.MESSAGES,
    "/v1/messages/count_tokens": anthropic.COUNT_TOKENS,
}


def build_app(config: Config, config_path: str | None = None, worker: int = 0,
              admin_port: int | None = None, admin_reuse_port: bool = False,
              ) -> web.Application:
    """The main app. With `server.admin.enabled` it starts the admin listener on
    server.admin.host and `admin_port` (default: server.admin.port; a worker of
    --workers N gets the port its supervisor holds, and listens with SO_REUSEPORT)."""
    app = web.Application(client_max_size=int(config.server.max_body_mb * 1024 * 1024))
    gw = Gateway(config, config_path, worker)
    app[GATEWAY] = gw
    admin_cfg = config.server.admin
    listener = None
    if admin_cfg.enabled:
        listener = AdminListener(gw, admin_cfg.host, admin_cfg.port if admin_port is None
                                 else admin_port, admin_reuse_port)
        app[ADMIN_LISTENER] = listener

    for path, endpoint in ROUTES.items():
        app.router.add_post(path, _endpoint_handler(gw, endpoint))  # the chain is its own net
    tools, mcp = (last_resort(_tool_handler(gw, kind), render_error) for kind in ("http", "mcp"))
    app.router.add_route("*", "/tools/{tool}", tools)
    app.router.add_route("*", r"/tools/{tool}/{tail:[\s\S]*}", tools)
    app.router.add_route("*", "/mcp/{server}", mcp)
    app.router.add_get("/v1/models", last_resort(_models, render_error))
    app.router.add_get("/v1/models/{model}", last_resort(_model, render_error))
    if listener is None or config.server.metrics_on_main:
        app.router.add_get("/metrics", metrics_handler(gw))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    if listener is None:  # compatibility: no admin listener, the admin API stays here
        add_admin_routes(app, gw)
        add_console_routes(app, gw)  # no admin listener: the console stays with the API
    app.router.add_route("*", r"/{tail:[\s\S]*}", _not_found)

    async def on_startup(_: web.Application) -> None:
        await gw.start()
        if listener is not None:
            await listener.start()
            gw.admin_port = listener.port

    async def on_shutdown(_: web.Application) -> None:
        gw.draining = True

    async def on_cleanup(_: web.Application) -> None:
        # The main port has drained; the admin listener closes before the state it reads.
        if listener is not None:
            await listener.stop()
        await gw.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def _endpoint_handler(gw: Gateway, endpoint: Endpoint) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await gw.handle(request, endpoint)
    return handler


def _tool_handler(gw: Gateway, kind: str) -> Any:
    """Tool traffic goes to the current runtime's tool plane; it counts as in flight for
    drains and reloads like model traffic."""
    async def handler(request: web.Request) -> web.StreamResponse:
        rt = gw.runtime
        assert rt is not None
        if rt.tools is None:
            return json_response({"error": {
                "message": "no tools or MCP servers are configured (tools:, mcp_servers:)",
                "type": "invalid_request_error", "code": "unknown_tool"}}, 404)
        rt.enter()
        try:
            plane = rt.tools
            return await (plane.http.handle(request) if kind == "http"
                          else plane.mcp.handle(request))
        finally:
            rt.leave()
    return handler


async def _not_found(request: web.Request) -> web.StreamResponse:
    message = f"no such endpoint: {request.method} {request.path}"
    if request.path.startswith("/admin/") and ADMIN_LISTENER in request.app:
        message += " (the admin API is served by the admin listener, server.admin)"
    return render_error(request, GatewayError(404, "unknown_endpoint", message))


def render_error(request: web.Request, err: GatewayError) -> web.StreamResponse:
    """An error in the dialect of the path asked for: the admin API's own shape, JSON-RPC
    under /mcp/, Anthropic's under /v1/messages, OpenAI's elsewhere."""
    path = request.path
    if path.startswith("/admin/"):
        return json_response({"error": {"message": err.message, "type": "admin_error",
                                        "code": err.code, "param": err.param}},
                             err.status, err.headers)
    if path.startswith("/mcp/"):
        return json_response(rpc_error(None, err), err.status, err.headers)
    dialect = anthropic.DIALECT if path.startswith("/v1/messages") else openai.DIALECT
    return web.Response(status=err.status, body=dialect.error_body(err),
                        content_type="application/json", headers=err.headers)


def _model_entry(name: str, provider: str, anthropic_style: bool) -> dict[str, Any]:
    if anthropic_style:
        return {"type": "model", "id": name, "display_name": name,
                "created_at": "2024-01-01T00:00:00Z"}
    return {"id": name, "object": "model", "created": 0, "owned_by": provider}


async def _models(request: web.Request) -> web.Response:
    rt = request.app[GATEWAY].runtime
    anthropic_style = "anthropic-version" in request.headers
    routes = rt.registry.routes
    data = [_model_entry(n, r.provider.name, anthropic_style) for n, r in routes.items()]
    if anthropic_style:
        return json_response({"data": data, "has_more": False,
                              "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None})
    return json_response({"object": "list", "data": data})


async def _model(request: web.Request) -> web.Response:
    rt = request.app[GATEWAY].runtime
    name = request.match_info["model"]
    route = rt.registry.routes.get(name)
    if route is None:
        return json_response({"error": {"message": f"the model {name!r} does not exist here",
                                        "type": "invalid_request_error",
                                        "code": "model_not_found", "param": "model"}}, 404)
    return json_response(_model_entry(name, route.provider.name,
                                      "anthropic-version" in request.headers))


async def _healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    """Ready: the runtime is built and the state answers with nothing left to write. The
    body says what is wrong otherwise: draining, the state down (and whether records are
    queued or already being dropped), records still being replayed."""
    gw = request.app[GATEWAY]
    if gw.draining:
        return json_response({"status": "draining"}, 503)
    health = gw.state.health()
    if gw.runtime is None or not await gw.state.ready():
        return json_response({"status": "not ready", **health}, 503)
    return json_response({"status": "ready", **health})
