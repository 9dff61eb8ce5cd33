"""One request as it flows through the stage chain, in typed parts.

Each part has one writer: the stage (or, for the answer, the relay) named in its docstring.
Stages after it read it; the account stage, which wraps the chain, reads them all to record
the step. Only two things are shared notes any stage may add to: `flags` (written on the
session's step) and `response_headers` (sent with a non-streamed answer).

The answer flows back through the response hooks of the stages that asked to see it
(`ex.hooks`, registered during on_request), in reverse order, as Envoy runs encoder filters:
`on_chunk` for each group of whole stream events, `on_body` for a whole answer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    import numpy as np
    from aiohttp import web
    from opentelemetry.trace import Span

    from tollway.config.tools import KeyConfig
    from tollway.protocols.base import Endpoint, StreamObserver
    from tollway.providers.base import ModelRoute
    from tollway.routing.concurrency import Limiter
    from tollway.state.breakers import BreakerOutcome
    from tollway.state.guards import Settlement
    from tollway.state.lineage import Lineage, LineageQuery


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
class KeyQuota:
    """A runtime key's own daily budget and request rate (state/keys.py), which the guard
    checks besides the config's budgets and rate limits."""

    budget_usd_day: float | None = None
    rpm: int | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling (identify): the agent and team its key names, and what the key may use.
    Tool calls have one too, resolved the same way."""

    agent: str = "anonymous"
    team: str = "default"
    key_id: str | None = None  # a short digest of the virtual key, never the key
    limits: KeyConfig | None = None  # the key's own models/tools/expiry, if it has any
    tags: tuple[str, ...] = ()
    quota: KeyQuota | None = None  # a runtime key's own budget and rpm


ANONYMOUS = Caller()  # before identify, and for keys that name no agent


@dataclass(slots=True)
class Run:
    """The session this request is a step of (session stage; the guard's admission settles
    a derived one through lineage in the same round trip)."""

    session: str = ""
    parent: str | None = None  # a session that handed this one its task
    root: str = ""  # the root of its chain of hand-offs
    how: str = ""  # how lineage found it: continued, opened, repeated, restarted...
    query: LineageQuery | None = None  # what lineage is asked, until it has answered


@dataclass(slots=True)
class Target:
    """The model asked for (parse), where it goes (route), and where it went (forward moves
    `route` along the fallbacks as it tries them)."""

    requested: str = ""
    route: ModelRoute | None = None
    rule: str | None = None
    fallbacks: Sequence[ModelRoute] = ()  # tried in order when it fails


class Prompt:
    """The prompt's tokens, counted by the meter's recipe the first time anything asks.

    Budgets, token rate limits, routing on prompt size, estimated models and an answer
    with no usage need the count; a request that needs none of these (the upstream
    reports usage) is never tokenised: on a 2,000-token agent step that is the largest
    single cost the gateway adds."""

    __slots__ = ("_count", "_counted", "_raw")

    def __init__(self) -> None:
        self._count: Callable[[], tuple[int, int]] | None = None
        self._counted = 0
        self._raw = 0

    def defer(self, count: Callable[[], tuple[int, int]]) -> None:
        """`count()` gives (counted, raw); called at most once, when first needed."""
        self._count = count

    def set(self, counted: int, raw: int) -> None:
        self._count, self._counted, self._raw = None, counted, raw

    def _resolve(self) -> None:
        count, self._count = self._count, None
        if count is not None:
            self._counted, self._raw = count()

    @property
    def counted(self) -> int:
        if self._count is not None:
            self._resolve()
        return self._counted

    @property
    def raw(self) -> int:
        """Before the estimate factor (models with no public tokenizer)."""
        if self._count is not None:
            self._resolve()
        return self._raw

    @property
    def known(self) -> int:
        """The count if something needed it, else 0 (never counts)."""
        return 0 if self._count is not None else self._counted


@dataclass(slots=True)
class GuardDecision:
    """What the guards decided (guard stage; policy stage for denials)."""

    refused_by: str = "allowed"  # or rate:<limit>, budget:<scope>, loop:<detector>...
    settlement: Settlement | None = None  # reservations to settle with the real cost
    stream_allowance_usd: float | None = None  # what a stream may cost before it is ended
    stream_counted: tuple[int, int] = (0, 0)  # (text pieces counted, their tokens) so far
    budget_shares: Mapping[str, float] | None = None  # scope -> spent / limit


@dataclass(slots=True)
class SemanticKey:
    """Where a request sits in the semantic cache: its partition, last user turn and vector."""

    partition: str
    text: str
    vector: np.ndarray | None = None


@dataclass(slots=True)
class CacheUse:
    """How the cache took part (cache stage)."""

    served: str = "miss"  # miss, exact, semantic
    key: str | None = None  # exact key, when this request may be served from / stored in it
    store: bool = False  # capture the answer to store it
    body: bytes | None = None  # the complete answer as the upstream gave it, to store
    pieces: list[bytes] | None = None  # a stream's events as they pass, while capturing
    semantic: SemanticKey | None = None
    explore: Exploration | None = None  # a candidate forwarded anyway, to judge


@dataclass(slots=True)
class Exploration:
    """A semantic candidate the cache could have served and forwarded instead, so that the
    fresh answer judges it."""

    key: int
    similarity: float
    body_key: str
    model: str


@dataclass(slots=True)
class Upstream:
    """The provider call (forward)."""

    provider: str = ""  # the deployment's provider that answered
    kind: str = ""  # its kind (openai, anthropic, demo)
    model: str = ""  # the model name that deployment was asked for
    breaker_outcomes: tuple[BreakerOutcome, ...] = ()  # one per attempt, for the breakers
    started: float = 0.0
    headers_at: float = 0.0
    ended: float = 0.0
    first_token_at: float = 0.0
    body_changed: bool = False
    usage_injected: bool = False  # we asked upstream for stream usage; strip it from the client

    @property
    def seconds(self) -> float:
        if not self.started:
            return 0.0
        return max(0.0, (self.ended or time.perf_counter()) - self.started)


@dataclass(slots=True)
class Outcome:
    """The answer (relay; price settles usage and cost; the chain the status of refusals)."""

    status: int = 0
    error_code: str | None = None
    usage: Usage | None = None
    usage_source: str = "none"  # "upstream" | "counted" | "partial" | "cache" | "none"
    cost_usd: float = 0.0
    text: Callable[[], str] | None = None  # the answer's text, decoded on demand
    tool_calls: Sequence[str] = ()  # tools the model's answer called
    call_ids: Sequence[str] = ()  # their ids, which the agent's next request echoes back
    call_args: Sequence[tuple[str, str]] = ()  # (name, arguments as JSON text) of each call
    response_id: str | None = None  # Responses: what a next call names to continue
    client_disconnected: bool = False
    stream_truncated: bool = False


@dataclass(slots=True)
class Chunk:
    """Whole stream events in the client's dialect, about to be written. A hook may rewrite
    `data`, hold it (return an awaitable from on_chunk: the stream waits for it, and nothing
    after it is read or buffered meanwhile), or raise a GatewayError to end the stream with
    an error event in the client's dialect.

    A hook that holds only some events (a tool call awaiting approval, not the text before
    it) moves the events before them from `data` to `ready`: those are written before the
    wait (the hooks after it in this pass, of stages earlier in the chain, do not see them;
    a cached replay, written whole, puts them back in front of `data`)."""

    data: bytes
    observer: StreamObserver | None  # the upstream stream so far; None for a cached replay
    ready: bytes = b""


_UNPARSED: Any = object()


@dataclass(slots=True)
class Body:
    """A whole answer in the client's dialect, about to be sent; hooks may replace it."""

    status: int
    payload: bytes
    _parsed: Any = _UNPARSED

    def json(self) -> Any:
        """The payload parsed (once), or None when it is not JSON."""
        if self._parsed is _UNPARSED:
            try:
                self._parsed = orjson.loads(self.payload)
            except orjson.JSONDecodeError:
                self._parsed = None
        return self._parsed

    def replace(self, obj: Any) -> None:
        self._parsed = obj
        self.payload = orjson.dumps(obj)


class ResponseHook(Protocol):
    def on_chunk(self, ex: Exchange, chunk: Chunk) -> Awaitable[None] | None: ...

    async def on_body(self, ex: Exchange, body: Body) -> None: ...


@dataclass(slots=True)
class Exchange:
    request: web.Request
    endpoint: Endpoint
    request_id: str
    raw: bytes = b""
    body: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    wall_start: float = field(default_factory=time.time)
    caller: Caller = ANONYMOUS
    run: Run = field(default_factory=Run)
    target: Target = field(default_factory=Target)
    prompt: Prompt = field(default_factory=Prompt)
    guard: GuardDecision = field(default_factory=GuardDecision)
    cache: CacheUse = field(default_factory=CacheUse)
    upstream: Upstream = field(default_factory=Upstream)
    outcome: Outcome = field(default_factory=Outcome)
    flags: list[str] = field(default_factory=list)  # noted on the session's step
    response_headers: dict[str, str] = field(default_factory=dict)
    hooks: list[ResponseHook] = field(default_factory=list)  # in chain order
    held_slots: list[Limiter] = field(default_factory=list)  # backpressure's, to release
    span: Span | None = None  # observe.otel, when spans are exported
    finished_at: float = 0.0
    accounted: bool = False

    def follow(self, lineage: Lineage) -> None:
        """The run lineage resolved replaces the provisional one."""
        run = self.run
        run.session, run.root, run.how = lineage.session, lineage.root, lineage.how
        run.parent = lineage.parent or run.parent
        run.query = None

    @property
    def model_name(self) -> str:
        t = self.target
        return t.route.name if t.route else (t.requested or "unknown")

    async def pass_chunk(self, chunk: Chunk) -> None:
        """Show stream events to the response hooks, last stage first (a cached replay:
        nothing is written before the whole has passed)."""
        for hook in reversed(self.hooks):
            held = hook.on_chunk(self, chunk)
            if held is not None:
                ready, chunk.ready = chunk.ready, b""
                await held
                chunk.data = ready + chunk.data

    async def pass_body(self, body: Body) -> None:
        """Show a whole answer to the response hooks, last stage first."""
        for hook in reversed(self.hooks):
            await hook.on_body(self, body)
