"""Cache: answer a repeated request from the exact cache; store successful answers.

A hit answers here (the rest of the chain is skipped): the stored body with a fresh id and
zero billed tokens, replayed as an SSE stream when the request streams. Only complete,
successful answers are stored, never errors or cut streams, and the store happens after
the answer went out.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from tollway.cache.exact import Entry, deterministic, key
from tollway.config.model import ExactCacheConfig
from tollway.exchange import Exchange, Usage
from tollway.observe.metrics import Metrics
from tollway.stages.base import Stage, tollway_headers
from tollway.state.base import State

CACHEABLE = frozenset({"chat", "completions", "messages", "responses", "embeddings"})


class Cache(Stage):
    name = "cache"

    def __init__(self, cfg: ExactCacheConfig, state: State, metrics: Metrics,
                 model_ttls: dict[str, float | None]) -> None:
        self.cfg = cfg
        self.state = state
        self.metrics = metrics
        self.model_ttls = model_ttls

    def _ttl(self, model: str) -> float:
        ttl = self.model_ttls.get(model)
        return self.cfg.ttl_s if ttl is None else ttl

    async def on_request(self, ex: Exchange) -> web.Response | None:
        route = ex.route
        if route is None or ex.endpoint.name not in CACHEABLE or not self._ttl(route.name):
            return None
        asked = {t.strip() for t in
                 ex.request.headers.get("x-tollway-cache", "").lower().split(",")}
        if not (self.cfg.when == "always" or ex.endpoint.name == "embeddings"
                or deterministic(ex.body) or "store" in asked):
            return None
        scope = {"agent": f"agent={ex.agent}", "team": f"team={ex.team}",
                 "global": "global"}[self.cfg.scope]
        ex.cache_key = key(scope, route.name, ex.endpoint.name, ex.body, ex.stream)
        ex.cache_store = "no-store" not in asked
        if "no-cache" in asked:
            self.metrics.child(self.metrics.cache_requests, "exact", "skip").inc()
            return None
        start = time.perf_counter()
        raw = await self.state.cache_get(ex.cache_key)
        self.metrics.child(self.metrics.cache_lookup, "exact").observe(
            time.perf_counter() - start)
        entry = Entry.decode(raw) if raw is not None else None
        if entry is None:
            self.metrics.child(self.metrics.cache_requests, "exact", "miss").inc()
            return None
        self.metrics.child(self.metrics.cache_requests, "exact", "hit").inc()
        self.metrics.child(self.metrics.cache_savings, route.name).inc(entry.cost_usd)
        ex.cache = "exact"
        ex.cache_store = False
        ex.status = entry.status
        ex.usage, ex.usage_source = Usage(), "cache"
        headers = tollway_headers(ex)
        headers["x-tollway-cache-original-usage"] = orjson.dumps(entry.usage).decode()
        headers["x-tollway-cost-usd"] = "0.00000000"
        if ex.stream:
            headers["Cache-Control"] = "no-cache"
        return web.Response(status=entry.status, body=entry.served(), headers=headers,
                            content_type=entry.content_type)

    async def after(self, ex: Exchange) -> None:
        body = ex.cache_body
        if (not ex.cache_key or not ex.cache_store or ex.cache != "miss" or body is None
                or ex.status != 200 or ex.stream_truncated or ex.client_disconnected
                or len(body) > self.cfg.max_entry_kb * 1024 or ex.route is None):
            return
        u = ex.usage or Usage()
        entry = Entry(200, "text/event-stream" if ex.stream else "application/json",
                      ex.cost_usd, {"input": u.input, "output": u.output, "cached": u.cached,
                                    "cache_write": u.cache_write}, body)
        await self.state.cache_put(ex.cache_key, entry.encode(), self._ttl(ex.route.name))
