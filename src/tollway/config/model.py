"""The gateway.yaml model. Unknown keys are errors: a typo must not silently disable a guard."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(Strict):
    host: str = "0.0.0.0"
    port: int = Field(4100, ge=0, le=65535)  # 0: any free port
    max_body_mb: float = Field(16, gt=0)
    drain_timeout_s: float = Field(30, ge=0)
    # Empty: the admin API answers loopback clients only. Plain or "sha256:<hex>".
    admin_key: str | None = Field(None, repr=False)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False

    @field_validator("admin_key")
    @classmethod
    def _admin_key(cls, v: str | None) -> str | None:
        if v:
            _check_key(v)
        return v or None


class StateConfig(Strict):
    backend: Literal["memory"] = "memory"
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


class ProviderConfig(Strict):
    kind: ProviderKind
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

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if self.kind != "demo" and not self.base_url:
            raise ValueError(f"a provider of kind {self.kind!r} needs base_url")
        if self.style == "azure" and (self.kind != "openai" or not self.api_version):
            raise ValueError("style azure needs kind openai and api_version")
        return self

    @property
    def has_key(self) -> bool:
        return bool(self.api_key) or self.passthrough_auth


class PriceConfig(Strict):
    """USD per million tokens."""

    input: float = Field(0, ge=0)
    output: float = Field(0, ge=0)
    cached_input: float | None = Field(None, ge=0)  # default: the input price
    cache_write: float | None = Field(None, ge=0)  # default: the input price


class ModelConfig(Strict):
    provider: str
    model: str | None = None  # the provider's own id; default: the name under `models:`
    price: PriceConfig = Field(default_factory=PriceConfig)
    # Encoding used to count prompts; default chosen from the model id.
    encoding: Literal["o200k_base", "cl100k_base", "o200k_harmony"] | None = None
    # Anthropic models have no public tokenizer: o200k count x this, corrected from real usage.
    tokenizer_factor: float = Field(1.1, gt=0)


class AgentConfig(Strict):
    keys: list[str] = Field(default_factory=list, repr=False)  # plain, or "sha256:<hex>"
    team: str = "default"

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for k in v:
            _check_key(k)
        return v


class Config(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    agents: dict[str, AgentConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> Config:
        for name, m in self.models.items():
            if m.provider not in self.providers:
                raise ReferenceError_(
                    ("models", name, "provider"),
                    f"model {name!r} names provider {m.provider!r}, which is not under "
                    f"providers: (known: {', '.join(sorted(self.providers)) or 'none'})",
                )
        seen: dict[str, str] = {}
        for name, a in self.agents.items():
            for i, k in enumerate(a.keys):
                h = key_digest(k)
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
