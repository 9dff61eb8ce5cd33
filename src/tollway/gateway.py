"""The gateway process: what lives as long as the process (state, metrics, the token memo,
the semantic index, traces) and the Runtime built from the current config, which a reload
replaces whole."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tollway.build import build_audit, build_chain, build_state, build_wal
from tollway.cache.semantic_cache import SemanticCache
from tollway.config.load import ConfigError, Problem
from tollway.config.model import Config
from tollway.exchange import Exchange
from tollway.guardrails.engine import Guardrails
from tollway.guardrails.judge import InjectionJudge
from tollway.observe.audit import Audit
from tollway.observe.metrics import Metrics
from tollway.observe.otel import Tracing
from tollway.policy.approvals import ApprovalDesk
from tollway.policy.identity import Identity
from tollway.policy.keybook import KeyBook
from tollway.protocols.base import Endpoint
from tollway.providers.base import ModelRegistry, Provider
from tollway.providers.registry import build_providers, build_registry, needs_demo
from tollway.reload import Reloader
from tollway.routing.breakers import BreakerBoard
from tollway.stages.base import Chain
from tollway.state.wal import WriteAhead
from tollway.tokens.counter import TokenCounter
from tollway.tokens.encodings import get_encoding
from tollway.tools.plane import ToolPlane

log = logging.getLogger("tollway")
STOP_PART_S = 5.0


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


class Gateway:
    """Process-wide parts (state, metrics, token memo) and the current Runtime."""

    def __init__(self, config: Config, config_path: str | None = None, worker: int = 0,
                 ) -> None:
        self.config = config
        self.config_path = config_path
        self.worker = worker  # this process's slot among --workers (0 alone)
        self.metrics = Metrics()
        self.counter = TokenCounter()
        self.state = build_state(config, self.metrics)
        self.wal: WriteAhead | None = build_wal(config, worker)
        self.demo: Any = None
        self.semantic: SemanticCache | None = None
        self.audit: Audit | None = build_audit(config)
        self.tracing: Tracing | None = None  # built by build_runtime from config.otel
        self.runtime: Runtime | None = None
        self.guardrails: Guardrails | None = None  # built with the runtime, when rules ask
        self.draining = False
        # The admin listener's bound port once it listens (None: no admin listener).
        self.admin_port: int | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.reloader = Reloader(self)
        self.breakers = BreakerBoard(self.state, self.metrics)
        # Red-zone calls held for approval (tool gate, policy stage): outlives reloads.
        self.approvals = ApprovalDesk(self.state, self.metrics)
        # Runtime keys (admin API): outlive reloads; refreshed from the state while on.
        self.keys = KeyBook(self.state.keys, config.identity.runtime_keys_refresh_s)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()

    def new_request_id(self) -> str:
        return f"req_{self._id_prefix}{next(self._ids):08x}"

    async def start(self) -> None:
        await self.state.start()
        if self.wal is not None:
            await self._recover_written_ahead(self.wal)
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
        keys = None
        if cfg.identity.runtime_keys:
            keys = self.keys
            keys.refresh_s = cfg.identity.runtime_keys_refresh_s
            await keys.start()  # loads them first (a no-op once running)
        identity = Identity(cfg, keys)
        guardrails = await self._guardrails_for(cfg)
        tools = None
        if cfg.tools or cfg.mcp_servers:
            tools = ToolPlane(cfg, self.state, self.metrics, self.breakers, identity,
                              self.approvals, guardrails, self.audit)
        return Runtime(cfg, providers, registry,
                       build_chain(self, cfg, registry, identity, guardrails), tools)

    async def _guardrails_for(self, cfg: Config) -> Guardrails | None:
        """Detectors outlive reloads that leave them alone (Presidio takes a second or two
        to build: off the event loop)."""
        rules = cfg.policy.guardrails
        if not rules:
            self.guardrails = None
            return None
        g = self.guardrails
        if g is not None and g.cfg == cfg.guardrails and g.rules.rules == rules:
            return g
        loop = asyncio.get_running_loop()
        try:
            self.guardrails = await loop.run_in_executor(
                None, lambda: Guardrails(cfg.guardrails, rules, self.metrics))
        except (ValueError, ImportError) as exc:  # the config names what cannot be built
            raise ConfigError([Problem("guardrails", None, "guardrails", str(exc))]) from None
        inj = cfg.guardrails.injection
        if inj.judge:
            self.guardrails.judge = InjectionJudge(
                inj.judge, inj.judge_timeout_ms / 1000,
                lambda n: self.runtime.registry.routes.get(n) if self.runtime else None,
                self.state)
        return self.guardrails

    async def _recover_written_ahead(self, wal: WriteAhead) -> None:
        """Record what a worker in this slot wrote ahead and was killed before recording."""
        ledger = self.state.ledger
        ledger.on_written = wal.written  # type: ignore[attr-defined]
        found = wal.unwritten()
        for step, settle in found:
            await ledger.record(step, settle)
        if found:
            log.warning("recorded %d steps a killed worker wrote ahead (%s)", len(found),
                        wal.path)

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
        self.semantic.learner.state = self.state  # the judge model's spend
        self.semantic.learner.resolve = lambda name: (
            self.runtime.registry.routes.get(name) if self.runtime else None)
        await self.semantic.start()

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
        """Each part gets STOP_PART_S to close: a stalled Redis or a stuck upstream
        connection must not hold the process past its orchestrator's grace period (what
        did not close in time is logged and left to the process exit)."""
        if self.wal is not None:
            self.wal.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        parts = [("reloader", self.reloader.stop()), ("breakers", self.breakers.stop()),
                 ("keys", self.keys.stop())]
        if self.runtime is not None:
            parts.append(("providers", self.runtime.close()))
        if self.semantic is not None:
            parts.append(("semantic cache", self.semantic.stop()))
        if self.audit is not None:
            parts.append(("audit", self.audit.close()))
        if self.tracing is not None:
            parts.append(("tracing", self.tracing.shutdown()))
        if self.demo is not None:
            parts.append(("demo provider", self.demo.stop()))
        parts.append(("state", self.state.close()))
        for name, closing in parts:
            try:
                async with asyncio.timeout(STOP_PART_S):
                    await closing
            except TimeoutError:
                log.warning("shutdown: the %s did not close within %.0fs; left to exit",
                            name, STOP_PART_S)

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
