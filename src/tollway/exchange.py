"""One request's state as it flows through the stage chain. Stages share nothing else."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from tollway.config.tools import KeyConfig
    from tollway.protocols.base import Endpoint
    from tollway.providers.registry import ModelRoute
    from tollway.state.guards import Settlement


@dataclass(slots=True)
class Usage:
    """Tokens of one call. `input` excludes cache reads and cache writes, which are billed apart."""

    input: int = 0
    output: int = 0
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0

    @property
    def total_input(self) -> int:
        return self.input + self.cached + self.cache_write


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling (identify): the agent and team its key names, and what the key may use.
    Tool calls have one too, resolved the same way."""

    agent: str = "anonymous"
    team: str = "default"
    key_id: str | None = None  # a short digest of the virtual key, never the key
    limits: KeyConfig | None = None  # the key's own models/tools/expiry, if it has any
    tags: tuple[str, ...] = ()


@dataclass(slots=True)
class Exchange:
    request: web.Request
    endpoint: Endpoint
    request_id: str
    raw: bytes = b""
    body: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    wall_start: float = field(default_factory=time.time)
    # identify
    agent: str = "anonymous"
    team: str = "default"
    session: str = ""
    tags: tuple[str, ...] = ()
    key_id: str | None = None  # a short digest of the virtual key, never the key
    who: Caller | None = None  # the caller and what its key may use
    flags: list[str] = field(default_factory=list)  # noted on the session's step
    guard: str = "allowed"  # what refused the request, if anything did
    tool_calls: list[str] = field(default_factory=list)  # tools the model's answer called
    tool_policy: Any = None  # policy.model_calls.ModelToolCalls, when the model's calls are checked
    parent_session: str | None = None
    # the model asked for, and where it goes
    requested_model: str = ""
    route: ModelRoute | None = None
    rule: str | None = None
    fallbacks: list[ModelRoute] = field(default_factory=list)  # tried in order when it fails
    attempts: list[str] = field(default_factory=list)  # "target: outcome" per target tried
    provider_name: str = ""  # the deployment's provider that answered
    provider_kind: str = ""  # its kind (openai, anthropic, demo)
    upstream_model: str = ""  # the model name that deployment was asked for
    breaker_outcomes: list[Any] = field(default_factory=list)  # BreakerOutcome per attempt
    budget_shares: dict[str, float] = field(default_factory=dict)  # scope -> spent / limit
    stream: bool = False
    body_changed: bool = False
    usage_injected: bool = False  # we asked upstream for stream usage; strip it from the client
    # guard
    settlement: Settlement | None = None
    stream_allowance_usd: float | None = None  # what a stream may cost before it is ended
    stream_counted: tuple[int, int] = (0, 0)  # (text pieces counted, their tokens) so far
    held_slots: list[Any] = field(default_factory=list)  # backpressure slots to release
    # meter
    prompt_tokens_counted: int = 0
    prompt_tokens_raw: int = 0  # before the estimate factor (Anthropic)
    # forward
    upstream_started: float = 0.0
    upstream_headers_at: float = 0.0
    upstream_ended: float = 0.0
    first_token_at: float = 0.0
    finished_at: float = 0.0
    client_disconnected: bool = False
    stream_truncated: bool = False
    response_headers: dict[str, str] = field(default_factory=dict)
    # account
    usage: Usage | None = None
    usage_source: str = "none"  # "upstream" | "counted" | "none"
    completion_text: Callable[[], str] | None = None  # the stream's text, decoded on demand
    cost_usd: float = 0.0
    status: int = 0
    error_code: str | None = None
    cache: str = "miss"
    cache_key: str | None = None  # set when this request may be served from / stored in it
    cache_store: bool = False
    cache_body: bytes | None = None  # the complete answer as the client got it, to store
    # (partition, last user turn, its vector) when the semantic cache may answer or store
    semantic: tuple[str, str, Any] | None = None
    accounted: bool = False
    span: Any = None  # observe.otel handle, when spans are exported

    @property
    def model_name(self) -> str:
        return self.route.name if self.route else (self.requested_model or "unknown")

    @property
    def upstream_seconds(self) -> float:
        if not self.upstream_started:
            return 0.0
        return max(0.0, (self.upstream_ended or time.perf_counter()) - self.upstream_started)
