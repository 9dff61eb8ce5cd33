"""What the guard asks of the State before a request, and settles after it.

All pre-request checks of one request travel together (one Redis round trip): the kill
switch, every rate limit, every budget reservation and the loop counters. All post-request
updates travel together too: budget reconciliation, token rate reconciliation and the step.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field

from tollway.state.breakers import BreakerOutcome
from tollway.state.lineage import Lineage, LineageQuery

PERIOD_TTL_S = {"day": 2 * 86400, "week": 8 * 86400, "month": 32 * 86400, "total": 0}


_period_cache: dict[tuple[str, int], str] = {}


def period_id(period: str, now: float | None = None) -> str:
    """The current period's name (UTC): 2026-11-22, 2026-W47, 2026-11 or "all"."""
    if period == "total":
        return "all"
    t_now = time.time() if now is None else now
    key = (period, int(t_now // 60))  # periods change on the minute at the earliest
    cached = _period_cache.get(key)
    if cached is None:
        if len(_period_cache) > 64:
            _period_cache.clear()
        cached = _period_cache[key] = _period_name(period, t_now)
    return cached


def _period_name(period: str, now: float) -> str:
    t = time.gmtime(now)
    if period == "day":
        return time.strftime("%Y-%m-%d", t)
    if period == "month":
        return time.strftime("%Y-%m", t)
    if period == "week":
        year, week, _ = datetime.date(t.tm_year, t.tm_mon, t.tm_mday).isocalendar()
        return f"{year}-W{week:02d}"
    return "all"


@dataclass(slots=True)
class RateCheck:
    """One GCRA limit. Units are requests (cost 1) or tokens (cost = counted prompt tokens)."""

    key: str  # state key suffix, e.g. "agent:support-bot:rpm"
    label: str  # bounded metric label: agent_rpm, key_tpm, model_rpm...
    limit: int  # per minute
    cost: int
    burst: float = 1.0

    @property
    def interval_us(self) -> float:
        return 60_000_000 / self.limit

    @property
    def tolerance_us(self) -> float:
        return 60_000_000 * self.burst


@dataclass(slots=True)
class BudgetCheck:
    scope: str  # session | agent | team | global
    name: str
    period: str
    limit: float
    reserve: float
    period_key: str = ""
    holder: str = ""  # the request whose reservation this is, once admitted

    def __post_init__(self) -> None:
        if not self.period_key:
            self.period_key = period_id(self.period)

    @property
    def key(self) -> str:
        return f"{self.scope}:{self.name}:{self.period_key}"

    @property
    def ttl_s(self) -> int:
        return PERIOD_TTL_S[self.period]


@dataclass(slots=True)
class LoopCheck:
    session: str
    agent: str
    fingerprint: str | None = None  # counted per session within fp_window_s
    fp_window_s: float = 300
    steps: bool = False  # count steps and remember the session's first request
    chain: str | None = None  # ping-pong: count hand-offs between agents on this chain


@dataclass(slots=True)
class Admission:
    session: str
    agent: str
    rates: list[RateCheck] = field(default_factory=list)
    budgets: list[BudgetCheck] = field(default_factory=list)
    loop: LoopCheck | None = None
    # The reservations are held under it (each budget check's `holder`), so the settlement,
    # or a release, undoes exactly this request's, once, however often it is replayed.
    request_id: str = ""
    hold_s: float = 900.0  # a reservation never settled (a killed process) lapses after it
    # Which run this is, found in the same round trip: `session` above is then provisional,
    # and every session-keyed check uses the session it resolves to (Verdict.lineage).
    lineage: LineageQuery | None = None


@dataclass(slots=True)
class Verdict:
    allowed: bool = True
    denied_by: str | None = None  # killed | paused | rate | budget | state
    rate: RateCheck | None = None  # the limit that refused
    retry_after_s: float = 0.0
    budget: BudgetCheck | None = None  # the budget that refused
    # Before this request's reservation: (spent, reserved by others) per budget check.
    budget_state: list[tuple[float, float]] = field(default_factory=list)
    # After this request: (remaining units, seconds until full) per rate check.
    rate_state: list[tuple[int, float]] = field(default_factory=list)
    repeats: int = 0  # times this fingerprint was seen in the window, this one included
    steps: int = 0  # steps of the session, this one included
    age_s: float = 0.0  # since the session's first request
    rounds: int = 0  # hand-offs between agents on the chain
    degraded: bool = False  # the state was unreachable and fail_open let this through
    lineage: Lineage | None = None  # the run, when the admission asked


@dataclass(slots=True)
class Settlement:
    """Undo the reservation, add the real cost, correct token buckets by the real usage,
    and count each attempt's outcome on its target's circuit breaker. Applied once per
    `request_id` (the step's id): a replayed settlement is a no-op."""

    request_id: str = ""
    budgets: list[tuple[BudgetCheck, float]] = field(default_factory=list)  # (check, actual)
    token_rates: list[tuple[RateCheck, int]] = field(default_factory=list)  # (check, delta)
    breakers: list[BreakerOutcome] = field(default_factory=list)
