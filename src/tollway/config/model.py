"""The gateway.yaml model. Unknown keys are errors: a typo must not silently disable a guard.

Each section lives in a module of its own concern (server, providers, agents, routing, cache,
loops); this module composes them into the root `Config`, checks what crosses sections (names
that refer to other sections, workers and shared state), and re-exports every section's names
so `from tollway.config.model import ...` keeps working for all of them."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import Field, PrivateAttr, model_validator

from tollway.config.agents import (
    AgentBudget,
    AgentConfig,
    BudgetLimit,
    BudgetsConfig,
    Period,
    RateLimit,
    RateLimitsConfig,
    SessionBudget,
)
from tollway.config.base import Strict
from tollway.config.cache import CacheConfig, ExactCacheConfig, SemanticCacheConfig
from tollway.config.guardrails import GuardrailsConfig
from tollway.config.loops import (
    LoopAction,
    LoopsConfig,
    MaxDuration,
    MaxSteps,
    NoProgress,
    PingPong,
    RepeatedRequest,
    RepeatedToolCall,
)
from tollway.config.observe import AuditConfig, TraceConfig
from tollway.config.providers import (
    BreakerConfig,
    ConcurrencyLimit,
    DeploymentConfig,
    ModelConfig,
    PriceConfig,
    ProviderConfig,
    ProviderKind,
    RetryConfig,
)
from tollway.config.routing import (
    BudgetSpent,
    Globs,
    Range,
    Rule,
    SplitTarget,
    TimeWindow,
    Weekday,
    When,
)
from tollway.config.server import (
    AdminListenerConfig,
    IdentityConfig,
    OperatorConfig,
    RedisConfig,
    ServerConfig,
    StateConfig,
)
from tollway.config.tools import TOOL_NAME, HttpToolConfig, KeyConfig, McpServerConfig
from tollway.observe.otel import OtelConfig

__all__ = [
    "TOOL_NAME",
    "AdminListenerConfig",
    "AgentBudget",
    "AgentConfig",
    "AuditConfig",
    "BreakerConfig",
    "BudgetLimit",
    "BudgetSpent",
    "BudgetsConfig",
    "CacheConfig",
    "ConcurrencyLimit",
    "Config",
    "DeploymentConfig",
    "ExactCacheConfig",
    "Globs",
    "HttpToolConfig",
    "IdentityConfig",
    "KeyConfig",
    "LoopAction",
    "LoopsConfig",
    "MaxDuration",
    "MaxSteps",
    "McpServerConfig",
    "ModelConfig",
    "NoProgress",
    "OperatorConfig",
    "OtelConfig",
    "Period",
    "PingPong",
    "PriceConfig",
    "ProviderConfig",
    "ProviderKind",
    "Range",
    "RateLimit",
    "RateLimitsConfig",
    "RedisConfig",
    "ReferenceError_",
    "ReferenceErrors",
    "RepeatedRequest",
    "RepeatedToolCall",
    "RetryConfig",
    "Rule",
    "SemanticCacheConfig",
    "ServerConfig",
    "SessionBudget",
    "SplitTarget",
    "StateConfig",
    "Strict",
    "TimeWindow",
    "TraceConfig",
    "Weekday",
    "When",
    "key_digest",
]


class Config(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    budgets: BudgetsConfig = Field(default_factory=BudgetsConfig)
    rate_limits: RateLimitsConfig = Field(default_factory=RateLimitsConfig)
    loops: LoopsConfig = Field(default_factory=LoopsConfig)
    # POST /admin/sessions/{id}/kill and /admin/agents/{name}/pause take effect on every
    # replica; it costs one state lookup per request (part of the guard's round trip).
    kill_switch: bool = True
    routing: list[Rule] = Field(default_factory=list)
    retries: RetryConfig = Field(default_factory=RetryConfig)
    breakers: BreakerConfig | None = None  # the default breaker of every model deployment
    cache: CacheConfig = Field(default_factory=CacheConfig)
    # Detectors' settings; what they look at and what is done is in the policies'
    # `guardrails:` rules (tollway.policy.guardrails).
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)
    # HTTP tools behind /tools/<name>/..., MCP servers behind /mcp/<name>.
    tools: dict[str, HttpToolConfig] = Field(default_factory=dict)
    mcp_servers: dict[str, McpServerConfig] = Field(default_factory=dict)
    # Policy files (paths or globs, relative to this file): who may call which tools and
    # models, risk zones, approvals. Loaded and checked with the config.
    policies: list[str] = Field(default_factory=list)
    trace: TraceConfig = Field(default_factory=TraceConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    # OTLP/HTTP export of one span per request (GenAI semantic conventions). Off by default.
    otel: OtelConfig = Field(default_factory=OtelConfig)
    # Who may use the admin API and the console, with what role (server.admin_key is one
    # more operator, "admin", with the admin role).
    operators: dict[str, OperatorConfig] = Field(default_factory=dict)
    _policy: Any = PrivateAttr(default=None)

    @property
    def policy(self) -> Any:
        """The loaded PolicySet (tollway.policy), empty when `policies:` names none."""
        if self._policy is None:
            from tollway.policy.model import PolicySet

            self._policy = PolicySet.empty()
        return self._policy

    @property
    def guarded(self) -> bool:
        return (self.kill_switch or self.budgets.any or self.rate_limits.any
                or self.loops.any)

    @model_validator(mode="after")
    def _workers_share_state(self) -> Config:
        n = self.server.workers
        if n > 1 and self.state.backend != "redis":
            raise ReferenceError_(("server", "workers"),
                                  f"{n} workers need state.backend: redis; with "
                                  f"state.backend: {self.state.backend} every worker would keep "
                                  f"its own budgets, rate limits, sessions and spend (set "
                                  f"state.backend: redis, or workers: 1)")
        if n > 1 and self.audit.enabled and self.audit.sink == "file":
            raise ReferenceError_(("audit", "sink"),
                                  f"{n} workers need audit.sink: redis: {n} processes "
                                  f"appending to one file would write {n} broken chains")
        return self

    @model_validator(mode="after")
    def _references(self) -> Config:
        """Every name that points at another section, all checked: one run of `tollway
        check` reports every mistake, not the first."""
        found: list[ReferenceError_] = []
        teams = {a.team for a in self.agents.values()}
        names_seen: set[str] = set()
        for i, rule in enumerate(self.routing):
            if rule.name in names_seen:
                found.append(ReferenceError_(("routing", i, "name"),
                                      f"another rule is already named {rule.name!r}"))
            names_seen.add(rule.name)
            targets = ([("to", rule.to)] if rule.to else []) + [
                (("split", j, "model"), t.model) for j, t in enumerate(rule.split or [])] + [
                (("fallbacks", j), f) for j, f in enumerate(rule.fallbacks)]
            for where, target in targets:
                if target not in self.models:
                    loc = (where,) if isinstance(where, str) else where
                    found.append(ReferenceError_(("routing", i, *loc),
                                          f"rule {rule.name!r} sends to model {target!r}, "
                                          f"which is not under models: (known: "
                                          f"{', '.join(sorted(self.models)) or 'none'})"))
        judge = self.guardrails.injection.judge
        if judge is not None and judge not in self.models:
            found.append(ReferenceError_(("guardrails", "injection", "judge"),
                                  f"judge {judge!r} is not a model under models: (known: "
                                  f"{', '.join(sorted(self.models)) or 'none'})"))
        sem = self.cache.semantic
        if sem.enabled and sem.embedder != "local" and sem.embedder not in self.models:
            found.append(ReferenceError_(("cache", "semantic", "embedder"),
                                  f"embedder {sem.embedder!r} is neither 'local' nor a model "
                                  f"under models: (known: "
                                  f"{', '.join(sorted(self.models)) or 'none'})"))
        for name, m in self.models.items():
            for j, d in enumerate(m.deployments):
                if d.provider not in self.providers:
                    found.append(ReferenceError_(("models", name, "deployments", j, "provider"),
                                          f"no provider named {d.provider!r}"))
            for j, f in enumerate(m.fallbacks):
                if f not in self.models or f == name:
                    found.append(ReferenceError_(("models", name, "fallbacks", j),
                                          f"fallback {f!r} is not another configured model"))
        for section, names, known, what in (
                (("budgets", "agents"), self.budgets.agents, self.agents, "agent"),
                (("budgets", "teams"), self.budgets.teams, teams, "team"),
                (("rate_limits", "agents"), self.rate_limits.agents, self.agents, "agent"),
                (("rate_limits", "models"), self.rate_limits.models, self.models, "model")):
            for name in names:
                if name not in known:
                    found.append(ReferenceError_(
                        (*section, name), f"no {what} named {name!r} is configured "
                        f"(known: {', '.join(sorted(known)) or 'none'})"))
        for name, m in self.models.items():
            if m.provider not in self.providers:
                found.append(ReferenceError_(
                    ("models", name, "provider"),
                    f"model {name!r} names provider {m.provider!r}, which is not under "
                    f"providers: (known: {', '.join(sorted(self.providers)) or 'none'})",
                ))
        for name, t in self.tools.items():
            if t.fallback is not None and (t.fallback not in self.tools or t.fallback == name):
                found.append(ReferenceError_(("tools", name, "fallback"),
                                      f"fallback {t.fallback!r} is not another tool under tools:"))
        for server, ms in self.mcp_servers.items():
            for tool, tc in ms.tools.items():
                if tc.fallback is not None and (tc.fallback == tool
                                                or not re.match(TOOL_NAME, tc.fallback)):
                    found.append(ReferenceError_(("mcp_servers", server, "tools", tool, "fallback"),
                                          f"fallback {tc.fallback!r} must name another tool "
                                          f"of server {server!r}"))
        for name in [*self.tools, *self.mcp_servers]:
            if not re.match(TOOL_NAME, name):
                section = "tools" if name in self.tools else "mcp_servers"
                found.append(ReferenceError_(
                    (section, name), "a tool or server name is letters, digits, '_', '.', '-'"))
        seen: dict[str, str] = {}
        for name, a in self.agents.items():
            for i, k in enumerate(a.keys):
                h = key_digest(k if isinstance(k, str) else k.key)
                if h in seen:
                    found.append(ReferenceError_(
                        ("agents", name, "keys", i),
                        f"this key is already the key of agent {seen[h]!r}",
                    ))
                seen[h] = name
        if len(found) == 1:
            raise found[0]
        if found:
            raise ReferenceErrors(found)
        return self


class ReferenceError_(ValueError):
    """A cross-section error that knows which key it is about."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


class ReferenceErrors(ValueError):
    """Several cross-section errors, each with its key."""

    def __init__(self, errors: list[ReferenceError_]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


def key_digest(key: str) -> str:
    """The sha256 hex of a configured key, whether it was written plain or hashed."""
    if key.startswith("sha256:"):
        return key[7:]
    return hashlib.sha256(key.encode()).hexdigest()
