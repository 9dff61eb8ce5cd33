"""Builds the aiohttp application and the stage chain from a Config."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tollway.admin.api import add_admin_routes
from tollway.cache.semantic_cache import SemanticCache
from tollway.config.model import Config
from tollway.exchange import Exchange
from tollway.observe.audit import Audit
from tollway.observe.metrics import Metrics
from tollway.observe.otel import Tracing
from tollway.protocols import anthropic, openai
from tollway.protocols.base import Endpoint
from tollway.providers.registry import (
    ModelRegistry,
    Provider,
    build_providers,
    build_registry,
    needs_demo,
)
from tollway.reload import Reloader
from tollway.routing.breakers import BreakerBoard
from tollway.routing.rules import Router
from tollway.stages.account import Account
from tollway.stages.backpressure import Backpressure, Limiter
from tollway.stages.base import Chain, Stage, json_response
from tollway.stages.cache import Cache
from tollway.stages.forward import Forward
from tollway.stages.guard import Guard
from tollway.stages.identify import Identify, Identity
from tollway.stages.meter import Meter
from tollway.stages.parse import Parse
from tollway.stages.price import Price
from tollway.stages.route import Route
from tollway.state.base import State
from tollway.state.memory import MemoryState
from tollway.tokens.counter import TokenCounter
from tollway.tokens.encodings import get_encoding
from tollway.tools.plane import ToolPlane

log = logging.getLogger("tollway")
GATEWAY = web.AppKey("gateway", "Gateway")

ROUTES: dict[str, Endpoint] = {
    "/v1/chat/completions": openai.CHAT,
    "/v1/completions": openai.COMPLETIONS,
    "/v1/embeddings": openai.EMBEDDINGS,
    "/v1/responses": openai.RESPONSES,
    "/v1/messages": anthropic.MESSAGES,
    "/v1/messages/count_tokens": anthropic.COUNT_TOKENS,
}


@dataclass
class Runtime:
    """Everything built from one config. A reload builds a new one and swaps it in whole."""

    config: Config
    providers: dict[str, Provider]
    registry: ModelRegistry
    chain: Chain
    tools: ToolPlane | None = None
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def enter(self) -> None:
        self.inflight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.inflight -= 1
        if not self.inflight:
            self.idle.set()

    async def close(self) -> None:
        for p in self.providers.values():
            await p.close()
        if self.tools is not None:
            await self.tools.close()


def build_state(cfg: Config, metrics: Metrics) -> State:
    s = cfg.state
    if s.backend == "redis":
        from tollway.state.redis import RedisState

        return RedisState(s, metrics)
    # Bodies of both caches live here: room for the exact entries and every semantic vector.
    sem = cfg.cache.semantic
    return MemoryState(s.session_steps, s.max_sessions, s.retention_hours,
                       cfg.cache.exact.max_entries + (sem.max_vectors if sem.enabled else 0))


def build_audit(cfg: Config) -> Audit | None:
    a = cfg.audit
    if not a.enabled:
        return None
    from tollway.observe.audit import FileSink, RedisSink

    if a.sink == "redis":
        r = cfg.state.redis
        return Audit(RedisSink(r.url, r.key_prefix, a.max_len))
    return Audit(FileSink(a.path, a.max_mb, a.keep))


class Gateway:
    """Process-wide parts (state, metrics, token memo) and the current Runtime."""

    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.metrics = Metrics()
        self.counter = TokenCounter()
        self.state = build_state(config, self.metrics)
        self.demo: Any = None
        self.semantic: SemanticCache | None = None
        self.audit: Audit | None = build_audit(config)
        self.tracing: Tracing | None = None  # built by build_runtime from config.otel
        self.runtime: Runtime | None = None
        self.draining = False
        self._sweeper: asyncio.Task[None] | None = None
        self.reloader = Reloader(self)
        self.breakers = BreakerBoard(self.state, self.metrics)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()

    def new_request_id(self) -> str:
        return f"req_{self._id_prefix}{next(self._ids):08x}"

    async def start(self) -> None:
        await self.state.start()
        if self.audit is not None:
            self.audit.start()
        self.runtime = await self.build_runtime(self.config)
        self._sweeper = asyncio.create_task(self._sweep_sessions())
        self.reloader.start()
        self.breakers.start()
        # Load the BPE files now (0.3 s each), not on the first request that needs them.
        for enc in {r.encoding for r in self.runtime.registry.routes.values()}:
            await asyncio.get_running_loop().run_in_executor(None, get_encoding, enc)

    async def build_runtime(self, cfg: Config) -> Runtime:
        await self._semantic_for(cfg)
        await self._tracing_for(cfg)
        demo_url = None
        if needs_demo(cfg):
            demo_url = await self._demo_url()
        providers = build_providers(cfg, demo_url)
        registry = build_registry(cfg, providers)
        identity = Identity(cfg)
        tools = None
        if cfg.tools or cfg.mcp_servers:
            tools = ToolPlane(cfg, self.state, self.metrics, self.breakers, identity)
        return Runtime(cfg, providers, registry, self.build_chain(cfg, registry, identity),
                       tools)

    async def _tracing_for(self, cfg: Config) -> None:
        """One Tracing while `otel:` is unchanged; a changed one replaces it (the old one
        flushes what it queued)."""
        if self.tracing is not None and self.tracing.cfg == cfg.otel:
            return
        old, self.tracing = self.tracing, Tracing.build(cfg.otel)
        if old is not None:
            await old.shutdown()

    async def _semantic_for(self, cfg: Config) -> None:
        """The semantic index outlives reloads; a changed `cache.semantic` starts a new one
        (with Redis state it catches up from the shared stream)."""
        sem = cfg.cache.semantic
        if self.semantic is not None and (not sem.enabled or self.semantic.cfg != sem):
            await self.semantic.stop()
            self.semantic = None
        if not sem.enabled or self.semantic is not None:
            return
        from tollway.cache.embedders import ModelEmbedder
        from tollway.cache.feed import RedisFeed

        embedder = None
        if sem.embedder != "local":
            embedder = ModelEmbedder(sem, lambda: self.runtime.registry.routes.get(sem.embedder)
                                     if self.runtime else None, self.state)
        feed = None
        if cfg.state.backend == "redis":
            keep = max([sem.ttl_s, *(m.cache_ttl_s or 0 for m in cfg.models.values())])
            feed = RedisFeed(cfg.state.redis, max_len=sem.max_vectors, keep_s=keep)
        self.semantic = SemanticCache(sem, self.metrics, embedder, feed)
        await self.semantic.start()

    def build_chain(self, cfg: Config, registry: ModelRegistry,
                    identity: Identity | None = None) -> Chain:
        """Only what the config switches on is in the chain."""
        stages: list[Stage] = [
            Account(self.state, self.metrics, self.breakers.on_transitions, cfg.trace,
                    self.audit, self.tracing),
            Parse(registry, int(cfg.server.max_body_mb * 1024 * 1024)),
            Identify(cfg, identity, self.metrics),
            Meter(self.counter),
        ]
        hooks = []
        if cfg.guarded:
            guard = Guard(cfg, self.state, self.metrics, self.counter)
            stages.append(guard)
            if cfg.budgets.any:
                hooks.append(guard.chunk_hook)
        fallbacks = {n: m.fallbacks for n, m in cfg.models.items() if m.fallbacks}
        if cfg.routing or fallbacks:
            stages.append(Route(Router(cfg.routing), registry, self.metrics, fallbacks))
        if cfg.cache.enabled:
            stages.append(Cache(
                cfg.cache, self.state, self.metrics,
                {n: m.cache_ttl_s for n, m in cfg.models.items()}, self.semantic,
                frozenset(n for n, m in cfg.models.items() if m.semantic_cache),
                frozenset(r.name for r in cfg.routing if r.semantic_cache)))
        providers = {n: Limiter(f"provider:{n}", p.concurrency)
                     for n, p in cfg.providers.items() if p.concurrency}
        models = {n: Limiter(f"model:{n}", m.concurrency)
                  for n, m in cfg.models.items() if m.concurrency}
        if providers or models:
            stages.append(Backpressure(self.metrics, providers, models))
        board = self.breakers if any(
            d.breaker for r in registry.routes.values() for d in r.deployments) else None
        stages += [Price(self.metrics, self.counter),
                   Forward(self.metrics, hooks, cfg.retries, board)]
        return Chain(stages)

    async def _demo_url(self) -> str:
        if self.demo is None:
            from tollway.testing.mock_provider import MockProvider, MockSettings

            self.demo = MockProvider(MockSettings(chunk_delay_ms=15))
            await self.demo.start()
            log.info("demo provider answering on %s", self.demo.base_url)
        return str(self.demo.base_url)

    async def _sweep_sessions(self) -> None:
        """Observe each session's cost once it has gone quiet (tollway_session_cost_usd)."""
        idle = self.config.state.session_idle_s
        while True:
            await asyncio.sleep(min(30.0, max(0.05, idle / 4)))
            try:
                for cost in await self.state.ledger.idle_sessions(idle):
                    self.metrics.session_cost.observe(cost)
                if self.config.cache.exact.enabled:
                    self.metrics.child(self.metrics.cache_entries, "exact").set(
                        await self.state.cache.size("c:"))
                if self.semantic is not None:
                    self.metrics.child(self.metrics.cache_entries, "semantic").set(
                        self.semantic.size)
            except Exception:  # the state is down: try again next round
                log.debug("session sweep failed", exc_info=True)

    async def reload(self, trigger: str) -> dict[str, Any]:
        return await self.reloader.reload(trigger)

    async def stop(self) -> None:
        await self.reloader.stop()
        await self.breakers.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.runtime is not None:
            await self.runtime.close()
        if self.semantic is not None:
            await self.semantic.stop()
        if self.audit is not None:
            await self.audit.close()
        if self.tracing is not None:
            await self.tracing.shutdown()
        if self.demo is not None:
            await self.demo.stop()
        await self.state.close()

    async def handle(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        rt = self.runtime
        assert rt is not None
        ex = Exchange(request=request, endpoint=endpoint, request_id=self.new_request_id())
        self.metrics.inflight.inc()
        rt.enter()
        try:
            return await rt.chain.run(ex)
        finally:
            rt.leave()
            self.metrics.inflight.dec()


def build_app(config: Config, config_path: str | None = None) -> web.Application:
    app = web.Application(client_max_size=int(config.server.max_body_mb * 1024 * 1024))
    gw = Gateway(config, config_path)
    app[GATEWAY] = gw

    for path, endpoint in ROUTES.items():
        app.router.add_post(path, _endpoint_handler(gw, endpoint))
    app.router.add_route("*", "/tools/{tool}", _tool_handler(gw, "http"))
    app.router.add_route("*", "/tools/{tool}/{tail:.*}", _tool_handler(gw, "http"))
    app.router.add_route("*", "/mcp/{server}", _tool_handler(gw, "mcp"))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model}", _model)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    add_admin_routes(app, gw)
    app.router.add_route("*", "/{tail:.*}", _not_found)

    async def on_startup(_: web.Application) -> None:
        await gw.start()

    async def on_shutdown(_: web.Application) -> None:
        gw.draining = True

    async def on_cleanup(_: web.Application) -> None:
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


async def _not_found(request: web.Request) -> web.Response:
    return json_response({"error": {
        "message": f"no such endpoint: {request.method} {request.path}",
        "type": "invalid_request_error", "code": "unknown_endpoint", "param": None}}, 404)


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


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[GATEWAY].metrics
    if metrics.multiprocess:  # reads and merges every worker's files: off the event loop
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.exposition)
    else:
        body = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def _healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    if gw.draining:
        return json_response({"status": "draining"}, 503)
    if gw.runtime is None or not await gw.state.ready():
        return json_response({"status": "not ready", "state": gw.state.backend}, 503)
    return json_response({"status": "ready", "state": gw.state.backend})
