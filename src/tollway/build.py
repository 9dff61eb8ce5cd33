"""Building the parts of a gateway from a Config: the state backend, the audit log, and the
stage chain with only what the config switches on."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

from tollway.config.model import Config
from tollway.guardrails.act import Enforcer
from tollway.observe.audit import Audit
from tollway.observe.metrics import Metrics
from tollway.policy.identity import Identity
from tollway.providers.base import ModelRegistry
from tollway.routing.concurrency import Limiter
from tollway.routing.rules import Router
from tollway.stages.account import Account, WriteAheadAccount
from tollway.stages.backpressure import Backpressure
from tollway.stages.base import Chain, Stage
from tollway.stages.cache import Cache
from tollway.stages.forward import Forward
from tollway.stages.guard import Guard
from tollway.stages.guardrail import Guardrail
from tollway.stages.identify import Identify
from tollway.stages.meter import Meter
from tollway.stages.parse import Parse
from tollway.stages.policy import Policy
from tollway.stages.price import Price
from tollway.stages.route import Route
from tollway.stages.session import Session
from tollway.state.base import State
from tollway.state.memory import MemoryState
from tollway.state.wal import WriteAhead

if TYPE_CHECKING:
    from tollway.gateway import Gateway
    from tollway.guardrails.engine import Guardrails


def build_state(cfg: Config, metrics: Metrics) -> State:
    s = cfg.state
    if s.backend == "redis":
        from tollway.state.redis import RedisState

        return RedisState(s, metrics)
    # Bodies of both caches live here: room for the exact entries and every semantic vector.
    sem = cfg.cache.semantic
    return MemoryState(s.session_steps, s.max_sessions, s.retention_hours,
                       cfg.cache.exact.max_entries + (sem.max_vectors if sem.enabled else 0))


def build_wal(cfg: Config, worker: int) -> WriteAhead | None:
    """The write-ahead file of this worker's slot; only with Redis (in memory, the state
    dies with the process anyway)."""
    s = cfg.state
    if s.backend != "redis" or not s.write_ahead:
        return None
    port = cfg.server.port
    # Port 0 (any free port, tests) names no stable slot: a folder of this process's own.
    name = f"tollway-wal-{port}" if port else f"tollway-wal-0-{os.getpid()}-{os.urandom(4).hex()}"
    folder = s.write_ahead_dir or os.path.join(tempfile.gettempdir(), name)
    return WriteAhead(os.path.join(folder, f"worker-{worker}.wal"))


def build_audit(cfg: Config) -> Audit | None:
    a = cfg.audit
    if not a.enabled:
        return None
    from tollway.observe.audit import FileSink, RedisSink

    if a.sink == "redis":
        return Audit(RedisSink(cfg.state.redis, a.max_len))
    return Audit(FileSink(a.path, a.max_mb, a.keep))


def build_chain(gw: Gateway, cfg: Config, registry: ModelRegistry, identity: Identity,
                guardrails: Guardrails | None = None) -> Chain:
    """Only what the config switches on is in the chain. Its order is the request's way
    through; answers come back through the response hooks in the reverse order."""
    account = Account if gw.wal is None else WriteAheadAccount
    stages: list[Stage] = [
        account(gw.state, gw.metrics, gw.breakers.on_transitions, cfg.trace,
                gw.audit, gw.tracing, gw.wal,
                cfg.identity.lineage_window_s if cfg.identity.lineage else None),
        Parse(registry, int(cfg.server.max_body_mb * 1024 * 1024)),
        Identify(identity),
    ]
    if identity.restricts or cfg.policy.zones:
        stages.append(Policy(identity, gw.metrics, cfg.policy.model_tool_calls, gw.approvals))
    # the session first: lineage reads the conversation as the agent sent it (a redacted
    # history would no longer match the answers it continues); metering after: the
    # redacted prompt is what goes upstream
    stages.append(Session(cfg, gw.state, resolve=not cfg.guarded))
    if guardrails is not None and guardrails.rules.places() & {"prompt", "answer",
                                                                "tool_results"}:
        stages.append(Guardrail(Enforcer(guardrails, gw.approvals, gw.audit,
                                         cfg.policy.approval_timeout_s)))
    stages.append(Meter(gw.counter))
    if cfg.guarded:
        stages.append(Guard(cfg, gw.state, gw.metrics, gw.counter))
    fallbacks = {n: m.fallbacks for n, m in cfg.models.items() if m.fallbacks}
    if cfg.routing or fallbacks:
        stages.append(Route(Router(cfg.routing), registry, gw.metrics, fallbacks))
    if cfg.cache.enabled:
        stages.append(Cache(
            cfg.cache, gw.state, gw.metrics,
            {n: m.cache_ttl_s for n, m in cfg.models.items()}, gw.semantic,
            {n: _bound(m.semantic_cache, cfg) for n, m in cfg.models.items()
             if m.semantic_cache},
            {r.name: _bound(r.semantic_cache, cfg) for r in cfg.routing if r.semantic_cache}))
    providers = {n: Limiter(f"provider:{n}", p.concurrency)
                 for n, p in cfg.providers.items() if p.concurrency}
    models = {n: Limiter(f"model:{n}", m.concurrency)
              for n, m in cfg.models.items() if m.concurrency}
    if providers or models:
        stages.append(Backpressure(gw.metrics, providers, models))
    board = gw.breakers if any(
        d.breaker for r in registry.routes.values() for d in r.deployments) else None
    stages += [Price(gw.metrics, gw.counter),
               Forward(gw.metrics, cfg.retries, board)]
    return Chain(stages)


def _bound(opt_in: object, cfg: Config) -> float:
    """A model's or rule's semantic max_error_rate: its own, else cache.semantic's."""
    own = getattr(opt_in, "max_error_rate", None)
    return own if isinstance(own, float) else cfg.cache.semantic.max_error_rate
