"""The State interface. Every backend passes the same tests."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from tollway.state.breakers import BreakerPolicy, BreakerView, Transition
from tollway.state.guards import Admission, Settlement, Verdict
from tollway.state.toolstate import ToolState


class StateUnavailable(Exception):
    """The shared state could not be reached; the guard applies state.on_failure."""


SPEND_DIMENSIONS = ("agent", "team", "model", "provider", "session", "tag")


@dataclass(slots=True)
class StepRecord:
    """One request as a step of its session: what the admin API and spend reports show."""

    request_id: str
    time: float
    agent: str
    team: str
    session: str
    endpoint: str
    model: str  # the configured name that answered
    requested_model: str
    provider: str
    status: int
    tags: tuple[str, ...] = ()
    rule: str | None = None
    cache: str = "miss"
    stream: bool = False
    error_code: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    prompt_tokens_counted: int = 0
    usage_source: str = "none"
    cost_usd: float = 0.0
    latency_s: float = 0.0
    ttft_s: float | None = None
    # What the guards and policies noted: "zone:yellow", "approved:<id>",
    # "model_tool_call:blocked:<tool>"...
    flags: tuple[str, ...] = ()
    guard: str = "allowed"  # or what refused it: rate:<limit>, budget:<scope>, loop:<detector>
    tool_calls: tuple[str, ...] = ()  # the tools the model's answer called
    prompt: str | None = None  # the step's last message; only with trace.content
    completion: str | None = None  # only with trace.content

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every field (~100 µs per step).
        d = {f: getattr(self, f) for f in _STEP_FIELDS}
        d["tags"] = list(self.tags)
        d["flags"] = list(self.flags)
        d["tool_calls"] = list(self.tool_calls)
        return d

    def keys(self, dim: str) -> tuple[str, ...]:
        if dim == "tag":
            return self.tags
        return (getattr(self, dim),)


_STEP_FIELDS = tuple(f.name for f in fields(StepRecord))


@dataclass(slots=True)
class SpendRow:
    key: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, step: StepRecord) -> None:
        self.requests += 1
        self.input_tokens += step.input_tokens
        self.output_tokens += step.output_tokens
        self.cached_tokens += step.cached_tokens
        self.cache_write_tokens += step.cache_write_tokens
        self.cost_usd += step.cost_usd

    def merge(self, other: SpendRow) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_tokens += other.cached_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cost_usd += other.cost_usd

    def to_dict(self) -> dict[str, Any]:
        d = {"key": self.key, "requests": self.requests, "input_tokens": self.input_tokens,
             "output_tokens": self.output_tokens, "cached_tokens": self.cached_tokens,
             "cache_write_tokens": self.cache_write_tokens,
             "cost_usd": round(self.cost_usd, 10)}
        d.update(self.extra)
        return d


def merge_rows(buckets: Iterable[dict[str, SpendRow]]) -> list[SpendRow]:
    """Sum per-key rows over buckets (hours); most expensive first."""
    out: dict[str, SpendRow] = {}
    for bucket in buckets:
        for key, row in bucket.items():
            acc = out.get(key)
            if acc is None:
                acc = out[key] = SpendRow(key)
            acc.merge(row)
    return sorted(out.values(), key=lambda r: -r.cost_usd)


class State(abc.ABC):
    """Shared mutable state: one call before a request (`admit`), one after (`record`)."""

    backend: str = "abstract"
    tools: ToolState  # tool-call repeats and approvals (tollway.state.toolstate)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect, load scripts."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def ready(self) -> bool:
        return True

    @abc.abstractmethod
    async def admit(self, adm: Admission) -> Verdict:
        """Kill switch, loop counters, rate limits and budget reservations, atomically.

        Rate limits and reservations are all-or-nothing: a refused request consumes none.
        Loop counters count every request that got past the kill switch.
        """

    @abc.abstractmethod
    async def record(self, step: StepRecord | None, settle: Settlement | None = None,
                     ) -> list[Transition]:
        """Settle the reservation and token buckets, apply breaker outcomes, attribute the
        step's spend to every dimension and append it to its session (step None: only the
        settlement). Returns the breaker transitions the outcomes caused."""

    @abc.abstractmethod
    async def breaker_probe(self, target: str, policy: BreakerPolicy,
                            ) -> tuple[bool, BreakerView, Transition | None]:
        """For a target that looked open: may this caller try it now (a half-open probe)?"""

    @abc.abstractmethod
    async def breaker_views(self, targets: list[str] | None = None) -> dict[str, BreakerView]:
        """Current breakers (all known ones when targets is None)."""

    @abc.abstractmethod
    async def set_flag(self, kind: str, name: str, on: bool) -> None:
        """kind "session": kill it; kind "agent": pause it (on=False resumes)."""

    @abc.abstractmethod
    async def flags(self) -> dict[str, list[str]]:
        """{"session": [killed...], "agent": [paused...]}"""

    @abc.abstractmethod
    async def budget_usage(self, key: str) -> tuple[float, float]:
        """(spent, reserved) of one budget key (scope:name:period)."""

    @abc.abstractmethod
    async def idle_sessions(self, idle_s: float, limit: int = 1000) -> list[float]:
        """The costs of sessions quiet for idle_s, each handed out once (for the histogram)."""

    @abc.abstractmethod
    async def cache_get(self, key: str) -> bytes | None:
        """A cached answer, or None (also when the state is unreachable: a miss)."""

    @abc.abstractmethod
    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store an answer for ttl_s; best effort."""

    @abc.abstractmethod
    async def cache_purge(self, pattern: str) -> int:
        """Drop every entry whose key matches the glob pattern; how many went."""

    @abc.abstractmethod
    async def cache_size(self, prefix: str = "c:") -> int:
        """Entries stored whose key starts with prefix (for tollway_cache_entries)."""

    @abc.abstractmethod
    async def spend(self, by: str, since: float | None = None) -> list[SpendRow]:
        """Totals per key of one dimension, most expensive first."""

    @abc.abstractmethod
    async def session(self, session_id: str) -> dict[str, Any] | None:
        """The session's steps in order, with its totals; None when unknown."""

    @abc.abstractmethod
    async def sessions(self, agent: str | None = None, since: float | None = None,
                       sort: str = "cost", limit: int = 50) -> list[dict[str, Any]]:
        """Session summaries, for finding the expensive and the busy ones."""
