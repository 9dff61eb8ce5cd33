"""Where requests go upstream: providers and the models they serve, with prices, deployments,
circuit breakers, backpressure limits and retries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from tollway.config.base import Strict
from tollway.config.cache import SemanticOptIn

ProviderKind = Literal["openai", "anthropic", "gemini", "vertex", "bedrock", "demo"]
# Where a kind's public API is, when base_url is not given.
DEFAULT_URLS = {"gemini": "https://generativelanguage.googleapis.com"}


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
    # kind vertex: the Google Cloud project and location (region, or "global"), and a
    # service-account key file; without one, Application Default Credentials.
    project: str | None = None
    location: str = "us-central1"
    credentials_file: str | None = None
    # kind bedrock: the AWS region; credentials come from the usual AWS chain (environment,
    # shared files and profile, container or instance role).
    region: str | None = None
    profile: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(600, gt=0)  # whole non-streamed response
    connect_timeout_s: float = Field(10, gt=0)
    read_timeout_s: float = Field(300, gt=0)  # longest silence inside a stream
    max_connections: int = Field(1000, ge=1)
    concurrency: ConcurrencyLimit | None = None

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if not self.base_url and self.kind in DEFAULT_URLS:
            object.__setattr__(self, "base_url", DEFAULT_URLS[self.kind])  # frozen model
        if self.kind == "vertex":
            if not self.project:
                raise ValueError("a provider of kind vertex needs project")
            if not self.base_url:
                host = ("aiplatform.googleapis.com" if self.location == "global"
                        else f"{self.location}-aiplatform.googleapis.com")
                object.__setattr__(self, "base_url", f"https://{host}")
        if self.kind == "bedrock":
            if not self.region:
                raise ValueError("a provider of kind bedrock needs region")
            if not self.base_url:
                object.__setattr__(self, "base_url",
                                   f"https://bedrock-runtime.{self.region}.amazonaws.com")
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
        return bool(self.api_key) or self.passthrough_auth or self.kind in ("vertex", "bedrock")


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
    # Serve this model's requests from the semantic cache too (cache.semantic must be
    # enabled): true, or {max_error_rate: 0.02} for a bound of its own.
    semantic_cache: bool | SemanticOptIn = False


class RetryConfig(Strict):
    """When to give up on a target and try the next (fallbacks, other deployments)."""

    on: list[Literal["connect", "timeout", "429", "5xx"]] = Field(
        default_factory=lambda: ["connect", "timeout", "429", "5xx"])
    backoff_ms: float = Field(100, ge=0)  # base of the jittered exponential backoff
    deadline_s: float = Field(60, gt=0)  # for all attempts of one request together
