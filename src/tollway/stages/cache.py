"""Cache: answer a repeated request from the exact cache, then from the semantic cache.

A hit answers here (the rest of the chain is skipped): the stored body with a fresh id and
zero billed tokens, replayed as an SSE stream when the request streams. Only complete,
successful answers are stored, never errors or cut streams, and the store happens after
the answer went out. The semantic cache is opt-in per model or routing rule and compares
only the last user turn, within a partition where everything else is identical.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from tollway.cache.exact import Entry, deterministic, key
from tollway.cache.partition import SEMANTIC_ENDPOINTS, partition, split_last_turn
from tollway.cache.semantic.judge import answer_text
from tollway.exchange import Body, Chunk, Exchange, Exploration, SemanticKey, Usage
from tollway.stages.base import Stage, tollway_headers

if TYPE_CHECKING:
    from tollway.cache.semantic_cache import SemanticCache
    from tollway.config.model import CacheConfig
    from tollway.observe.metrics import Metrics
    from tollway.state.base import State

log = logging.getLogger(__name__)
CACHEABLE = frozenset({"chat", "completions", "messages", "responses", "embeddings"})
_SCOPES = {"agent": "agent={}", "team": "team={}", "global": "global"}


class Cache(Stage):
    name = "cache"

    def __init__(self, cfg: CacheConfig, state: State, metrics: Metrics,
                 model_ttls: dict[str, float | None], semantic: SemanticCache | None = None,
                 semantic_models: dict[str, float] | None = None,
                 semantic_rules: dict[str, float] | None = None) -> None:
        self.exact = cfg.exact
        self.sem_cfg = cfg.semantic
        self.state = state
        self.metrics = metrics
        self.model_ttls = model_ttls
        self.semantic = semantic if cfg.semantic.enabled else None
        self.semantic_models = semantic_models or {}  # name -> its max_error_rate
        self.semantic_rules = semantic_rules or {}
        self.max_entry = cfg.exact.max_entry_kb * 1024

    def _ttl(self, model: str, default: float) -> float:
        ttl = self.model_ttls.get(model)
        return default if ttl is None else ttl

    def _scope(self, ex: Exchange, scope: str) -> str:
        return _SCOPES[scope].format(ex.caller.agent if scope == "agent" else ex.caller.team)

    async def on_request(self, ex: Exchange) -> web.Response | None:
        route = ex.target.route
        if route is None or ex.endpoint.name not in CACHEABLE:
            return None
        asked = {t.strip() for t in
                 ex.request.headers.get("x-tollway-cache", "").lower().split(",")}
        wanted = deterministic(ex.body) or "store" in asked
        skip = "no-cache" in asked
        store = "no-store" not in asked
        exact = self.exact
        use = ex.cache
        if exact.enabled and self._ttl(route.name, exact.ttl_s) and (
                wanted or exact.when == "always" or ex.endpoint.name == "embeddings"):
            use.key = key(self._scope(ex, exact.scope), route.name, ex.endpoint.name,
                          ex.body, ex.stream)
            use.store = store
            if skip:
                self.metrics.child(self.metrics.cache_requests, "exact", "skip").inc()
            else:
                hit = await self._exact(ex)
                if hit is not None:
                    return hit
        if self.semantic is not None and self._semantic_wanted(ex, wanted):
            hit = await self._semantic(ex, skip, store)
            if hit is not None:
                return hit
        if use.store:
            if ex.stream:
                use.pieces = []
            ex.hooks.append(self)  # capture the answer to store it
        return None

    async def _exact(self, ex: Exchange) -> web.Response | None:
        assert ex.cache.key is not None
        start = time.perf_counter()
        raw = await self.state.cache.get(ex.cache.key)
        self.metrics.child(self.metrics.cache_lookup, "exact").observe(
            time.perf_counter() - start)
        entry = Entry.decode(raw) if raw is not None else None
        if entry is None:
            self.metrics.child(self.metrics.cache_requests, "exact", "miss").inc()
            return None
        self.metrics.child(self.metrics.cache_requests, "exact", "hit").inc()
        return await self._serve(ex, entry, "exact")

    def _semantic_wanted(self, ex: Exchange, wanted: bool) -> bool:
        route = ex.target.route
        assert route is not None
        return (ex.endpoint.name in SEMANTIC_ENDPOINTS
                and (route.name in self.semantic_models or ex.target.rule in self.semantic_rules)
                and (wanted or self.sem_cfg.when == "always")
                and bool(self._ttl(route.name, self.sem_cfg.ttl_s)))

    async def _semantic(self, ex: Exchange, skip: bool, store: bool) -> web.Response | None:
        route = ex.target.route
        assert self.semantic is not None and route is not None
        split = split_last_turn(ex.endpoint.name, ex.body)
        if split is None or len(split[0]) > self.sem_cfg.max_text_chars:
            return None
        text, rest = split
        part = partition(self._scope(ex, self.sem_cfg.scope), route.name, ex.endpoint.name,
                         rest, ex.stream, self.semantic.model)
        use = ex.cache
        use.semantic = SemanticKey(part, text)
        use.store = store  # capture the answer's body
        if skip:
            self.metrics.child(self.metrics.cache_requests, "semantic", "skip").inc()
            return None
        start = time.perf_counter()
        found = await self.semantic.lookup(part, text)
        for why in found.rejected:
            self.metrics.child(self.metrics.cache_rejections, why.partition(":")[0]).inc()
        # A lookup that gave up (slow, queue full, embedder down) stores nothing either: the
        # cache is behind, and embedding the text again would only add to it.
        use.semantic = SemanticKey(part, text, found.vector) if found.vector is not None \
            else None
        entry = None
        decision = None
        if found.outcome == "hit":  # a candidate: serve it, explore it, or miss
            decision = self.semantic.learner.decide(route.name, found.key, found.similarity,
                                                    self._bound(ex))
            if decision.action == "explore":
                use.explore = Exploration(found.key, found.similarity, found.body_key,
                                          route.name)
                ex.flags.append("cache_explore")
            elif decision.action == "hit":
                raw = await self.state.cache.get(found.body_key)
                entry = Entry.decode(raw) if raw is not None else None
                if entry is None:
                    self.semantic.forget(part, found.key)
        self.metrics.child(self.metrics.cache_lookup, "semantic").observe(
            time.perf_counter() - start)
        if entry is None or decision is None:
            result = "miss" if found.outcome == "hit" else found.outcome
            self.metrics.child(self.metrics.cache_requests, "semantic", result).inc()
            return None
        self.metrics.child(self.metrics.cache_requests, "semantic", "hit").inc()
        if self.sem_cfg.threshold is None:  # a fixed threshold bounds nothing
            ex.response_headers["x-tollway-cache-confidence"] = f"{decision.confidence:.4f}"
        return await self._serve(ex, entry, "semantic", found.similarity)

    def _bound(self, ex: Exchange) -> float:
        """The max_error_rate of the rule that routed the request, else of its model."""
        rule = ex.target.rule
        if rule in self.semantic_rules:
            return self.semantic_rules[rule]  # type: ignore[index]
        route = ex.target.route
        assert route is not None
        return self.semantic_models.get(route.name, self.sem_cfg.max_error_rate)

    async def _serve(self, ex: Exchange, entry: Entry, kind: str,
                     similarity: float | None = None) -> web.Response:
        """A hit is the stored answer (the upstream's, in the client's dialect) passed through
        the response hooks of the stages before this one, as a fresh answer would be: the
        policies see it again."""
        route = ex.target.route
        assert route is not None
        self.metrics.child(self.metrics.cache_savings, route.name).inc(entry.cost_usd)
        use, out = ex.cache, ex.outcome
        use.served = kind
        use.store = False
        out.status = entry.status
        out.usage, out.usage_source = Usage(), "cache"
        payload = entry.served()
        if ex.hooks:
            if ex.stream:
                chunk = Chunk(payload, None)
                await ex.pass_chunk(chunk)
                payload = chunk.data
            else:
                body = Body(entry.status, payload)
                await ex.pass_body(body)
                payload = body.payload
        headers = tollway_headers(ex)
        headers["x-tollway-cache-original-usage"] = orjson.dumps(entry.usage).decode()
        headers["x-tollway-cost-usd"] = "0.00000000"
        if similarity is not None:
            headers["x-tollway-cache-similarity"] = f"{similarity:.4f}"
        if ex.stream:
            headers["Cache-Control"] = "no-cache"
        return web.Response(status=entry.status, body=payload, headers=headers,
                            content_type=entry.content_type)

    # --- capturing the answer, to store it ------------------------------------------------
    def on_chunk(self, ex: Exchange, chunk: Chunk) -> None:
        pieces = ex.cache.pieces
        if pieces is not None and chunk.data:
            pieces.append(chunk.data)

    async def on_body(self, ex: Exchange, body: Body) -> None:
        ex.cache.pieces = None  # a stream answered as a whole body
        if body.status == 200:
            ex.cache.body = body.payload

    async def after(self, ex: Exchange) -> None:
        use, out, route = ex.cache, ex.outcome, ex.target.route
        if (use.served != "miss" or not use.store or out.status != 200
                or out.stream_truncated or out.client_disconnected or route is None):
            return
        body = b"".join(use.pieces) if use.pieces is not None else use.body
        if body is None or len(body) > self.max_entry:
            return
        u = out.usage or Usage()
        entry = Entry(200, "text/event-stream" if ex.stream else "application/json",
                      out.cost_usd, {"input": u.input, "output": u.output, "cached": u.cached,
                                     "cache_write": u.cache_write}, body)
        encoded = entry.encode()
        model = route.name
        if use.key:
            await self.state.cache.put(use.key, encoded, self._ttl(model, self.exact.ttl_s))
        if use.explore is not None and self.semantic is not None:
            if await self._judged_right(ex, entry):
                return  # the stored answer stands for this request too: nothing to add
        if use.semantic is not None and self.semantic is not None:
            ttl = self._ttl(model, self.sem_cfg.ttl_s)
            body_key = f"s:{self._scope(ex, self.sem_cfg.scope)}:{model}:{os.urandom(8).hex()}"
            await self.state.cache.put(body_key, encoded, ttl)
            sk = use.semantic
            await self.semantic.store(sk.partition, sk.text, sk.vector, body_key, ttl)

    async def _judged_right(self, ex: Exchange, fresh: Entry) -> bool:
        """Judge an exploration: the fresh answer against the stored one. The verdict is
        evidence for the error bound; True when the stored answer agreed."""
        exp, sem = ex.cache.explore, self.semantic
        assert exp is not None and sem is not None
        raw = await self.state.cache.get(exp.body_key)
        stored = Entry.decode(raw) if raw is not None else None
        ok: bool | None = None
        if stored is not None:
            cached = answer_text(stored.body, stored.content_type)
            now = answer_text(fresh.body, fresh.content_type)
            if cached is not None and now is not None:
                question = ex.cache.semantic.text if ex.cache.semantic is not None else ""
                # The client has its answer; still, a judge never holds a worker long.
                limit = 30.0 if self.sem_cfg.judge.kind == "model" else max(
                    1.0, 4 * self.sem_cfg.timeout_ms / 1000)
                try:
                    async with asyncio.timeout(limit):
                        ok = await sem.learner.judge(question, cached, now)
                except TimeoutError:
                    ok = None
                except Exception:
                    log.exception("semantic cache judge failed")
        await sem.learner.note(exp.model, exp.key, exp.similarity, ok)
        return ok is True
