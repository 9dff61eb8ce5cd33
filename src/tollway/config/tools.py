"""Config of the tool gateway: HTTP tools, MCP servers and virtual-key limits."""

from __future__ import annotations

import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ToolBreakerConfig(_Strict):
    """A circuit breaker per tool: transport errors, timeouts and 5xx always count as
    failures; a tool's own error (a 4xx, an MCP `isError` result) only if the tool says so."""

    consecutive_failures: int = Field(5, ge=1)
    failure_rate: float = Field(0.5, gt=0, le=1)
    window_s: float = Field(30, gt=0)
    min_requests: int = Field(10, ge=1)
    latency_ms: float | None = Field(None, gt=0)
    open_s: float = Field(30, gt=0)
    half_open_probes: int = Field(1, ge=1)


class HttpToolConfig(_Strict):
    url: str  # the upstream base: /tools/<name>/<path> goes to <url>/<path>
    timeout_s: float = Field(30, gt=0)
    connect_timeout_s: float = Field(5, gt=0)
    cost_usd: float = Field(0, ge=0)  # per call, counted toward spend and budgets
    # Extra attempts for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) on a transport
    # error, a timeout or a 5xx; never for POST or PATCH.
    retries: int = Field(0, ge=0, le=5)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)  # upstream credentials
    breaker: ToolBreakerConfig | Literal[False] = Field(default_factory=ToolBreakerConfig)
    fail_on_4xx: bool = False  # a 4xx answer counts against the breaker
    fallback: str | None = None  # another tool under `tools:` answers while this one is open
    max_body_mb: float = Field(16, gt=0)


class McpToolConfig(_Strict):
    cost_usd: float | None = Field(None, ge=0)  # default: the server's
    fail_on_error: bool | None = None  # an `isError: true` result counts against the breaker
    fallback: str | None = None  # another tool of the same server, called with the arguments
    breaker: ToolBreakerConfig | Literal[False] | None = None  # default: the server's


class McpServerConfig(_Strict):
    url: str  # the server's Streamable HTTP endpoint, e.g. http://files:8000/mcp
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    timeout_s: float = Field(60, gt=0)  # one JSON-RPC exchange (or the silence in its stream)
    connect_timeout_s: float = Field(5, gt=0)
    cost_usd: float = Field(0, ge=0)  # per tools/call
    fail_on_error: bool = False
    breaker: ToolBreakerConfig | Literal[False] = Field(default_factory=ToolBreakerConfig)
    tools: dict[str, McpToolConfig] = Field(default_factory=dict)  # per-tool overrides


class KeyConfig(_Strict):
    """A virtual key with least capability: only these models and tools, until `expires`."""

    key: str = Field(repr=False)  # plain, or "sha256:<hex>"
    models: list[str] | None = None  # globs; None: any the agent may use
    tools: list[str] | None = None  # globs over tool names ("weather", "files/read_*")
    expires: datetime.datetime | None = None  # after this, 401

    @field_validator("expires")
    @classmethod
    def _aware(cls, v: datetime.datetime | None) -> datetime.datetime | None:
        if v is not None and v.tzinfo is None:
            v = v.replace(tzinfo=datetime.UTC)
        return v


TOOL_NAME = _NAME
