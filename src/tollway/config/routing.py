"""Routing rules: which conditions (`when`) send a request to which model, split or fallbacks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tollway.config.base import Strict
from tollway.config.cache import SemanticOptIn

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
    # Requests this rule matches may be answered from the semantic cache (opt-in per rule):
    # true, or {max_error_rate: ...} for a bound of its own.
    semantic_cache: bool | SemanticOptIn = False

    @model_validator(mode="after")
    def _action(self) -> Rule:
        if self.to and self.split:
            raise ValueError("a rule has either `to` or `split`, not both")
        if not (self.to or self.split or self.fallbacks or self.semantic_cache):
            raise ValueError("a rule needs `to`, `split` or `fallbacks`")
        return self
