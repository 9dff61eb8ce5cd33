"""The gateway.yaml model. Unknown keys are errors: a typo must not silently disable a guard."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from tollway.config.observe import AuditConfig, TraceConfig
from tollway.config.tools import TOOL_NAME, HttpToolConfig, KeyConfig, McpServerConfig
from tollway.observe.otel import OtelConfig

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ServerConfig(Strict):
    host: str = "0.0.0.0"
    port: int = Field(4100, ge=0, le=65535)  # 0: any free port
    max_body_mb: float = Field(16, gt=0)
    drain_timeout_s: float = Field(30, ge=0)
    # Empty: the admin API answers loopback clients only. Plain or "sha256:<hex>".
    admin_key: str | None = Field(None, repr=False)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False
    watch_interval_s: float = Field(2.0, ge=0)  # how often the config file is checked; 0: off
    # Processes serving the port (SO_REUSEPORT); more than 1 needs state.backend: redis.
    workers: int = Field(1, ge=1)

    @field_validator("admin_key")
    @classmethod
    def _admin_key(cls, v: str | None) -> str | None:
        if v:
            _check_key(v)
        return v or None


class RedisConfig(Strict):
    url: str = Field("redis://127.0.0.1:6379/0", repr=False)  # may carry a password
    # Every key starts with "{prefix}": one hash tag, so a Redis Cluster keeps the keys one
    # request touches in one slot and the guard scripts stay atomic.
    key_prefix: str = "tollway"
    timeout_ms: int = Field(250, ge=10)  # per command; past it the state counts as down
    max_connections: int = Field(64, ge=1)
    retry_interval_s: float = Field(1.0, gt=0)  # how often a down Redis is probed
    pending_max: int = Field(100_000, ge=0)  # settlements kept while Redis is down


class StateConfig(Strict):
    backend: Literal["memory", "redis"] = "memory"
    redis: RedisConfig = Field(default_factory=RedisConfig)
    # Redis unreachable: let requests through unguarded (spend is queued and written when it
    # comes back), or refuse them with 503.
    on_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    session_idle_s: float = Field(900, gt=0)  # a session this quiet is "done" for metrics
    session_steps: int = Field(500, ge=1)  # steps kept per session
    max_sessions: int = Field(20_000, ge=1)  # sessions kept, least recently active dropped
    retention_hours: int = Field(24 * 35, ge=1)  # spend buckets kept


class IdentityConfig(Strict):
    # What a key that is not in `agents:` (or no key at all) gets: counted as agent
    # "anonymous", or refused with 401.
    unknown_keys: Literal["anonymous", "reject"] = "anonymous"
    trust_agent_header: bool = False  # honour x-tollway-agent (only names from `agents:`)
    trust_session_header: bool = True  # honour x-tollway-session
    max_tags: int = Field(8, ge=0)


ProviderKind = Literal["openai", "anthropic", "demo"]


class ConcurrencyLimit(Strict):
    """Backpressure: at most `max` upstream requests at once, `queue` more waiting."""

    max: int = Field(ge=1)
    queue: int = Field(0, ge=0)
    queue_timeout_s: float = Field(10, gt=0)


class ProviderConfig(Strict):
    kind: ProviderKind
    # kind demo: the dialect the in-process demo answers in, as a provider of that kind would.
    dialect: Literal["openai", "anthropic"] | None = None
    base_url: str | None = None
    api_key: str | None = Field(None, repr=False)
    # Forward the client's own Authorization / x-api-key instead of api_key.
    passthrough_auth: bool = False
    # No key set (and no passthrough): let the in-process demo provider answer instead.
    demo_if_no_key: bool = False
    # "azure": deployments in the path, api-version query, api-key header.
    style: Literal["openai", "azure"] = "openai"
    api_version: str | None = None
    anthropic_version: str = "2023-06-01"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(600, gt=0)  # whole non-streamed response
    connect_timeout_s: float = Field(10, gt=0)
    read_timeout_s: float = Field(300, gt=0)  # longest silence inside a stream
    max_connections: int = Field(1000, ge=1)
    concurrency: ConcurrencyLimit | None = None

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if self.kind != "demo" and not self.base_url:
            raise ValueError(f"a provider of kind {self.kind!r} needs base_url")
        if self.style == "azure" and (self.kind != "openai" or not self.api_version):
            raise ValueError("style azure needs kind openai and api_version")
        if self.dialect is not None and self.kind != "demo":
            raise ValueError(f"dialect is for kind demo; a {self.kind} provider speaks "
                             f"{self.kind}")
        return self

    @property
    def speaks(self) -> str:
        """The provider kind whose dialect and adapter serve this provider."""
        return (self.dialect or "openai") if self.kind == "demo" else self.kind

    @property
    def has_key(self) -> bool:
        return bool(self.api_key) or self.passthrough_auth


class PriceConfig(Strict):
    """USD per million tokens."""

    input: float = Field(0, ge=0)
    output: float = Field(0, ge=0)
    cached_input: float | None = Field(None, ge=0)  # default: the input price
    cache_write: float | None = Field(None, ge=0)  # default: the input price


class BreakerConfig(Strict):
    """A circuit breaker per upstream deployment (provider + model id)."""

    consecutive_failures: int = Field(5, ge=1)
    failure_rate: float = Field(0.5, gt=0, le=1)  # share of failures in the window that opens
    window_s: float = Field(30, gt=0)
    min_requests: int = Field(10, ge=1)  # the rate only counts past this many in the window
    latency_ms: float | None = Field(None, gt=0)  # a slower success counts as a failure
    open_s: float = Field(30, gt=0)  # how long it stays open before probes
    half_open_probes: int = Field(1, ge=1)


class DeploymentConfig(Strict):
    """One place that serves the model: two API keys, three vLLM replicas..."""

    provider: str
    model: str | None = None  # default: the model's own `model`, else its name
    weight: float = Field(1, gt=0)


class ModelConfig(Strict):
    provider: str
    model: str | None = None  # the provider's own id; default: the name under `models:`
    # Several deployments of the model; the first request goes to the one `balance` picks,
    # a failed one is retried on the others before the model's fallbacks.
    deployments: list[DeploymentConfig] = Field(default_factory=list)
    balance: Literal["weighted", "least_inflight", "latency"] = "weighted"
    breaker: BreakerConfig | Literal[False] | None = None  # None: the `breakers:` default

    @model_validator(mode="before")
    @classmethod
    def _provider_from_deployments(cls, data: Any) -> Any:
        if isinstance(data, dict) and "provider" not in data and data.get("deployments"):
            first = data["deployments"][0]
            if isinstance(first, dict) and "provider" in first:
                data = {**data, "provider": first["provider"]}
        return data
    price: PriceConfig = Field(default_factory=PriceConfig)
    # Encoding used to count prompts; default chosen from the model id.
    encoding: Literal["o200k_base", "cl100k_base", "o200k_harmony"] | None = None
    # Anthropic models have no public tokenizer: o200k count x this, corrected from real usage.
    tokenizer_factor: float = Field(1.1, gt=0)
    concurrency: ConcurrencyLimit | None = None
    fallbacks: list[str] = Field(default_factory=list)  # when no routing rule names its own
    cache_ttl_s: float | None = Field(None, ge=0)  # this model's cache TTL; 0: never cached
    # Serve this model's requests from the semantic cache too (cache.semantic must be enabled).
    semantic_cache: bool = False


class AgentConfig(Strict):
    # Plain, or "sha256:<hex>"; or {key, models, tools, expires} for a key with less
    # capability than its agent.
    keys: list[str | KeyConfig] = Field(default_factory=list, repr=False)
    team: str = "default"

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: list[str | KeyConfig]) -> list[str | KeyConfig]:
        for k in v:
            _check_key(k if isinstance(k, str) else k.key)
        return v


Globs = list[str]


class Range(Strict):
    """min inclusive, max exclusive; either may be left out."""

    min: float | None = None
    max: float | None = None


class BudgetSpent(Strict):
    """The share (0..1) of a budget already spent, e.g. {scope: agent, min: 0.8}."""

    scope: Literal["session", "agent", "team", "global"] = "agent"
    min: float = Field(0, ge=0)
    max: float | None = Field(None, gt=0)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class TimeWindow(Strict):
    from_: str = Field("00:00", alias="from", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    to: str = Field("24:00", pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")
    days: list[Weekday] | None = None
    tz: str = "UTC"

    @field_validator("tz")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class When(Strict):
    """All listed conditions must hold; globs match any of the patterns."""

    agent: Globs | None = None
    team: Globs | None = None
    model: Globs | None = None  # the model the client asked for
    prompt_tokens: Range | None = None
    tools: bool | None = None  # whether the request offers tools
    stream: bool | None = None
    tags: list[str] | None = None  # every listed tag present
    headers: dict[str, str] | None = None  # header name -> glob on its value
    budget_spent: BudgetSpent | None = None
    time: TimeWindow | None = None

    @field_validator("agent", "team", "model", "tags", mode="before")
    @classmethod
    def _listify(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


class SplitTarget(Strict):
    model: str
    weight: float = Field(gt=0)


class Rule(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    when: When = Field(default_factory=When)
    to: str | None = None  # send to this model
    split: list[SplitTarget] | None = None  # or spread over several by weight
    fallbacks: list[str] = Field(default_factory=list)  # tried in order when it fails
    # Requests this rule matches may be answered from the semantic cache (opt-in per rule).
    semantic_cache: bool = False

    @model_validator(mode="after")
    def _action(self) -> Rule:
        if self.to and self.split:
            raise ValueError("a rule has either `to` or `split`, not both")
        if not (self.to or self.split or self.fallbacks or self.semantic_cache):
            raise ValueError("a rule needs `to`, `split` or `fallbacks`")
        return self


class RetryConfig(Strict):
    """When to give up on a target and try the next (fallbacks, other deployments)."""

    on: list[Literal["connect", "timeout", "429", "5xx"]] = Field(
        default_factory=lambda: ["connect", "timeout", "429", "5xx"])
    backoff_ms: float = Field(100, ge=0)  # base of the jittered exponential backoff
    deadline_s: float = Field(60, gt=0)  # for all attempts of one request together


class ExactCacheConfig(Strict):
    enabled: bool = False
    ttl_s: float = Field(3600, gt=0)
    # Whose answers a request may reuse: the same agent's, the same team's, or anyone's.
    scope: Literal["agent", "team", "global"] = "agent"
    # deterministic: only requests with temperature 0 (or the x-tollway-cache: store header);
    # always: every successful answer.
    when: Literal["deterministic", "always"] = "deterministic"
    max_entries: int = Field(10_000, ge=1)  # memory state; Redis bounds entries by TTL
    max_entry_kb: int = Field(512, ge=1)  # larger answers are not stored


class SemanticCacheConfig(Strict):
    """Answers a request whose last user turn means the same as a stored one's, within a
    partition where everything else (scope, model, system prompt, earlier turns, tools,
    parameters) is identical. Opt-in per model (`semantic_cache: true`) or routing rule."""

    enabled: bool = False
    # Cosine over the last user turn. 0.87 is tuned for the local embedder (0 false hits on
    # the hard-negative set); a provider's embedding model needs its own.
    threshold: float = Field(0.87, gt=0, le=1)
    scope: Literal["agent", "team", "global"] = "agent"
    when: Literal["deterministic", "always"] = "deterministic"
    ttl_s: float = Field(3600, gt=0)  # a model's cache_ttl_s overrides it
    # "local": WordLlama, in-process, weights from the wheel. Otherwise the name of an
    # embeddings model under `models:` (an OpenAI-compatible /v1/embeddings: OpenAI, TEI, Ollama).
    embedder: str = "local"
    dims: int | None = Field(None, ge=1)  # a model embedder's width (sent as `dimensions`)
    timeout_ms: float = Field(50, gt=0)  # embedding + search past this is a miss, not a wait
    batch_size: int = Field(32, ge=1)  # texts per call to a model embedder
    batch_ms: float = Field(2, ge=0)  # how long a text waits for others to share its call
    max_vectors: int = Field(100_000, ge=1)  # per process; the least recently added go first
    max_text_chars: int = Field(4000, ge=1)  # a longer last turn is not compared
    max_pending: int = Field(64, ge=1)  # embeddings queued past this: a miss, not a queue


class CacheConfig(Strict):
    exact: ExactCacheConfig = Field(default_factory=ExactCacheConfig)
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)

    @property
    def enabled(self) -> bool:
        return self.exact.enabled or self.semantic.enabled


Period = Literal["day", "week", "month", "total"]


class BudgetLimit(Strict):
    usd: float = Field(gt=0)
    period: Period = "month"


class AgentBudget(Strict):
    usd: float | None = Field(None, gt=0)
    period: Period = "day"
    session_usd: float | None = Field(None, gt=0)  # overrides budgets.session for this agent


class SessionBudget(Strict):
    usd: float = Field(gt=0)


class BudgetsConfig(Strict):
    # Reserved as output for requests that set no max_tokens.
    default_output_tokens: int = Field(1024, ge=1)
    soft_threshold: float = Field(0.8, gt=0, le=1)  # share of a budget that raises a warning
    global_: BudgetLimit | None = Field(None, alias="global")
    teams: dict[str, BudgetLimit] = Field(default_factory=dict)
    agents: dict[str, AgentBudget] = Field(default_factory=dict)
    session: SessionBudget | None = None

    @property
    def any(self) -> bool:
        return bool(self.global_ or self.teams or self.agents or self.session)


class RateLimit(Strict):
    rpm: int | None = Field(None, ge=1)  # requests per minute
    tpm: int | None = Field(None, ge=1)  # tokens per minute (prompt counted, then real usage)
    # How much of a minute's allowance may be spent at once (1.0 = a whole minute's worth).
    burst: float = Field(1.0, gt=0, le=1)


class RateLimitsConfig(Strict):
    agents: dict[str, RateLimit] = Field(default_factory=dict)
    default_agent: RateLimit | None = None  # every agent without its own entry
    per_key: RateLimit | None = None  # each virtual key on its own
    models: dict[str, RateLimit] = Field(default_factory=dict)

    @property
    def any(self) -> bool:
        return bool(self.agents or self.default_agent or self.per_key or self.models)


class LoopAction(Strict):
    action: Literal["halt", "alert"] = "halt"


class RepeatedToolCall(LoopAction):
    """The same tool, same arguments, same result, this many times in the conversation."""

    threshold: int = Field(3, ge=2)


class RepeatedRequest(LoopAction):
    """The same request body this many times within window_s in one session."""

    threshold: int = Field(5, ge=2)
    window_s: float = Field(300, gt=0)


class PingPong(LoopAction):
    """Two agents handing one task back and forth more than max_rounds times."""

    max_rounds: int = Field(5, ge=1)


class MaxSteps(LoopAction):
    limit: int = Field(ge=1)


class MaxDuration(LoopAction):
    seconds: float = Field(gt=0)


class LoopsConfig(Strict):
    repeated_tool_call: RepeatedToolCall | None = None
    repeated_request: RepeatedRequest | None = None
    ping_pong: PingPong | None = None
    max_steps: MaxSteps | None = None
    max_duration: MaxDuration | None = None

    @property
    def any(self) -> bool:
        return any((self.repeated_tool_call, self.repeated_request, self.ping_pong,
                    self.max_steps, self.max_duration))

    @property
    def stateful(self) -> bool:
        return any((self.repeated_request, self.ping_pong, self.max_steps, self.max_duration))


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
        teams = {a.team for a in self.agents.values()}
        names_seen: set[str] = set()
        for i, rule in enumerate(self.routing):
            if rule.name in names_seen:
                raise ReferenceError_(("routing", i, "name"),
                                      f"another rule is already named {rule.name!r}")
            names_seen.add(rule.name)
            targets = ([("to", rule.to)] if rule.to else []) + [
                (("split", j, "model"), t.model) for j, t in enumerate(rule.split or [])] + [
                (("fallbacks", j), f) for j, f in enumerate(rule.fallbacks)]
            for where, target in targets:
                if target not in self.models:
                    loc = (where,) if isinstance(where, str) else where
                    raise ReferenceError_(("routing", i, *loc),
                                          f"rule {rule.name!r} sends to model {target!r}, "
                                          f"which is not under models: (known: "
                                          f"{', '.join(sorted(self.models)) or 'none'})")
        sem = self.cache.semantic
        if sem.enabled and sem.embedder != "local" and sem.embedder not in self.models:
            raise ReferenceError_(("cache", "semantic", "embedder"),
                                  f"embedder {sem.embedder!r} is neither 'local' nor a model "
                                  f"under models: (known: "
                                  f"{', '.join(sorted(self.models)) or 'none'})")
        for name, m in self.models.items():
            for j, d in enumerate(m.deployments):
                if d.provider not in self.providers:
                    raise ReferenceError_(("models", name, "deployments", j, "provider"),
                                          f"no provider named {d.provider!r}")
            for j, f in enumerate(m.fallbacks):
                if f not in self.models or f == name:
                    raise ReferenceError_(("models", name, "fallbacks", j),
                                          f"fallback {f!r} is not another configured model")
        for section, names, known, what in (
                (("budgets", "agents"), self.budgets.agents, self.agents, "agent"),
                (("budgets", "teams"), self.budgets.teams, teams, "team"),
                (("rate_limits", "agents"), self.rate_limits.agents, self.agents, "agent"),
                (("rate_limits", "models"), self.rate_limits.models, self.models, "model")):
            for name in names:
                if name not in known:
                    raise ReferenceError_(
                        (*section, name), f"no {what} named {name!r} is configured "
                        f"(known: {', '.join(sorted(known)) or 'none'})")
        for name, m in self.models.items():
            if m.provider not in self.providers:
                raise ReferenceError_(
                    ("models", name, "provider"),
                    f"model {name!r} names provider {m.provider!r}, which is not under "
                    f"providers: (known: {', '.join(sorted(self.providers)) or 'none'})",
                )
        for name, t in self.tools.items():
            if t.fallback is not None and (t.fallback not in self.tools or t.fallback == name):
                raise ReferenceError_(("tools", name, "fallback"),
                                      f"fallback {t.fallback!r} is not another tool under tools:")
        for server, ms in self.mcp_servers.items():
            for tool, tc in ms.tools.items():
                if tc.fallback is not None and (tc.fallback == tool
                                                or not re.match(TOOL_NAME, tc.fallback)):
                    raise ReferenceError_(("mcp_servers", server, "tools", tool, "fallback"),
                                          f"fallback {tc.fallback!r} must name another tool "
                                          f"of server {server!r}")
        for name in [*self.tools, *self.mcp_servers]:
            if not re.match(TOOL_NAME, name):
                raise ReferenceError_(("tools" if name in self.tools else "mcp_servers", name),
                                      "a tool or server name is letters, digits, '_', '.', '-'")
        seen: dict[str, str] = {}
        for name, a in self.agents.items():
            for i, k in enumerate(a.keys):
                h = key_digest(k if isinstance(k, str) else k.key)
                if h in seen:
                    raise ReferenceError_(
                        ("agents", name, "keys", i),
                        f"this key is already the key of agent {seen[h]!r}",
                    )
                seen[h] = name
        return self


class ReferenceError_(ValueError):
    """A cross-section error that knows which key it is about."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def _check_key(k: str) -> None:
    if k.startswith("sha256:") and not _HEX64.match(k[7:]):
        raise ValueError("a hashed key must be 'sha256:' followed by 64 lower-case hex digits")
    if not k:
        raise ValueError("a key must not be empty")


def key_digest(key: str) -> str:
    """The sha256 hex of a configured key, whether it was written plain or hashed."""
    if key.startswith("sha256:"):
        return key[7:]
    return hashlib.sha256(key.encode()).hexdigest()
