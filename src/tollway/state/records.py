"""What the ledger stores and reports: one request as a step, and spend totals per key.

Plain data shared by every backend, the admin API and the accounting stage; no behaviour
beyond adding rows up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

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
    parent: str | None = None  # the session that handed this step its task (lineage)

    def to_dict(self) -> dict[str, Any]:
        # orjson writes the record itself as this dict (the ledger and the WAL hand it
        # the record). Not dataclasses.asdict: it deep-copies every field (~100 µs per step).
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
