"""Admission: the one question every model call and tool call asks the State before it is
made (kill switch, rate limits, budget reservations, loop counters), and the refusal the
caller gets when the answer is no. Shared by the guard stage and the tool gate.
"""

from __future__ import annotations

import math

from tollway.config.model import BudgetsConfig
from tollway.errors import GatewayError
from tollway.exchange import Caller
from tollway.observe.metrics import Metrics
from tollway.state.base import State, StateUnavailable
from tollway.state.guards import Admission, BudgetCheck, RateCheck, Settlement, Verdict

_PERIODIC = {"day": "daily", "week": "weekly", "month": "monthly"}


def budget_checks(b: BudgetsConfig, agent: str, team: str, session: str, reserve: float,
                  caller: Caller | None = None) -> list[BudgetCheck]:
    """Every budget a call of this agent, team and session spends from, reserving `reserve`;
    with `caller`, its runtime key's own daily budget too (scope "key", named by its id)."""
    checks = []
    quota = caller.quota if caller is not None else None
    if quota is not None and quota.budget_usd_day is not None and caller is not None and (
            caller.key_id is not None):
        checks.append(BudgetCheck("key", caller.key_id, "day", quota.budget_usd_day, reserve))
    agent_budget = b.agents.get(agent)
    session_usd = (agent_budget.session_usd if agent_budget and agent_budget.session_usd
                   else (b.session.usd if b.session else None))
    if session_usd:
        checks.append(BudgetCheck("session", session, "total", session_usd, reserve))
    if agent_budget is not None and agent_budget.usd:
        checks.append(BudgetCheck("agent", agent, agent_budget.period, agent_budget.usd,
                                  reserve))
    team_budget = b.teams.get(team)
    if team_budget is not None:
        checks.append(BudgetCheck("team", team, team_budget.period, team_budget.usd, reserve))
    if b.global_ is not None:
        checks.append(BudgetCheck("global", "global", b.global_.period, b.global_.usd,
                                  reserve))
    return checks


def refusal(metrics: Metrics, session: str, agent: str, v: Verdict,
            tool: str | None = None) -> GatewayError:
    """The error for an admission the State refused. `tool`: a tool call's, whose cost is
    the tool's configured price (max_tokens has nothing to do with it)."""
    if v.denied_by == "killed":
        return GatewayError(403, "policy_denied",
                            f"session {session!r} was killed by an operator")
    if v.denied_by == "paused":
        return GatewayError(403, "policy_denied",
                            f"agent {agent!r} is paused by an operator")
    if v.denied_by == "rate" and v.rate is not None:
        rc = v.rate
        metrics.ratelimit_rejections.labels(rc.label).inc()
        kind, unit = ("tokens", "tokens") if rc.label.endswith("tpm") else (
            "requests", "requests")
        wait = max(v.retry_after_s, 0.001)
        too_big = rc.cost * rc.interval_us > rc.tolerance_us
        message = (f"rate limit {rc.label} of {rc.limit} {unit} per minute reached for "
                   f"{_describe(rc)}; retry in {wait:.2f}s" if not too_big else
                   f"this request alone ({rc.cost} {unit}) exceeds the {rc.label} limit "
                   f"of {rc.limit} {unit} per minute for {_describe(rc)}")
        return GatewayError(429, "rate_limit_exceeded", message,
                            retry_after=math.ceil(wait), headers={
                                "retry-after-ms": str(math.ceil(wait * 1000)),
                                f"x-ratelimit-limit-{kind}": str(rc.limit),
                                f"x-ratelimit-remaining-{kind}": "0",
                                f"x-ratelimit-reset-{kind}": f"{wait:.3f}s"})
    if v.denied_by == "budget" and v.budget is not None:
        bc = v.budget
        spent, reserved = v.budget_state[-1] if v.budget_state else (0.0, 0.0)
        metrics.budget_rejections.labels(bc.scope).inc()
        what = "the global" if bc.scope == "global" else f"{bc.scope} {bc.name!r}'s"
        period = "" if bc.period == "total" else f" ({_PERIODIC[bc.period]} budget)"
        return GatewayError(402, "budget_exceeded",
                            f"budget exceeded: {what} budget{period} is ${bc.limit:.4f}; "
                            f"spent ${spent:.4f}, ${reserved:.4f} reserved by requests in "
                            f"flight, and " + (
                                f"this call of tool {tool!r} costs ${bc.reserve:.4f} "
                                f"(its configured cost_usd)" if tool is not None else
                                f"this request could cost up to ${bc.reserve:.4f} "
                                f"(set max_tokens to reserve less)"),
                            headers={"x-tollway-budget-scope": bc.scope})
    return GatewayError(403, "policy_denied", "refused by the gateway")


async def admit(state: State, adm: Admission, fail_closed: bool) -> Verdict:
    """The State's verdict; with the state unreachable, 503 (fail_closed) or a degraded
    pass with nothing reserved, so only the real cost is settled (fail_open).

    An admit that timed out may still be applied when the state answers again: a refused
    request then releases what it may have reserved (queued like any record; it is held
    under the request id, so this undoes that admit and nothing else). A degraded pass needs
    no release: its own settlement releases the same way."""
    try:
        return await state.guards.admit(adm)
    except StateUnavailable as exc:
        if fail_closed:
            if exc.sent and adm.budgets:
                await state.ledger.record(None, Settlement(
                    request_id=adm.request_id + ":release",
                    budgets=[(bc, 0.0) for bc in adm.budgets]))
            raise GatewayError(503, "state_unavailable",
                               "the gateway's shared state is unreachable and it is "
                               "configured to fail closed", retry_after=1) from exc
        for bc in adm.budgets:
            bc.reserve = 0.0
        return Verdict(degraded=True)


def _describe(rc: RateCheck) -> str:
    kind, name, _ = rc.key.split(":", 2)
    return f"{kind} {name!r}" if kind != "key" else "this key"
