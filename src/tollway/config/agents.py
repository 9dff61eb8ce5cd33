"""Who calls and how much they may spend: agents and their keys, budgets and rate limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tollway.config.base import Strict, check_key
from tollway.config.tools import KeyConfig


class AgentConfig(Strict):
    # Plain, or "sha256:<hex>"; or {key, models, tools, expires} for a key with less
    # capability than its agent.
    keys: list[str | KeyConfig] = Field(default_factory=list, repr=False)
    team: str = "default"

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: list[str | KeyConfig]) -> list[str | KeyConfig]:
        for k in v:
            check_key(k if isinstance(k, str) else k.key)
        return v


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
    # A reservation whose request never settles (its process was killed) is released after
    # this long; longer than any request or stream should last.
    reservation_ttl_s: float = Field(900, gt=0)
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
