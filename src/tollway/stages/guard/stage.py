"""Guard: one state round trip decides kill switch, rate limits, budgets and loop counters.

Before forwarding, the request's worst-case cost (prompt as counted, plus max_tokens or the
configured default for output) is reserved on every budget that applies; after the answer
the reservation is replaced by the real cost. Concurrent requests therefore cannot jointly
overshoot a budget by more than what was already in flight when it was reached.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any

from tollway.config.model import BudgetsConfig, Config, RateLimit
from tollway.errors import GatewayError
from tollway.exchange import Exchange
from tollway.observe.metrics import Metrics
from tollway.protocols.base import StreamObserver
from tollway.stages.base import Stage
from tollway.stages.guard import loops
from tollway.state.base import State, StateUnavailable
from tollway.state.guards import (
    Admission,
    BudgetCheck,
    LoopCheck,
    RateCheck,
    Settlement,
    Verdict,
)
from tollway.tokens.counter import TokenCounter

log = logging.getLogger("tollway.guard")
_PERIODIC = {"day": "daily", "week": "weekly", "month": "monthly"}


class Guard(Stage):
    name = "guard"

    def __init__(self, cfg: Config, state: State, metrics: Metrics, counter: TokenCounter,
                 ) -> None:
        self.cfg = cfg
        self.budgets = cfg.budgets
        self.rates = cfg.rate_limits
        self.loops = cfg.loops
        self.fail_closed = cfg.state.on_failure == "fail_closed"
        self.state = state
        self.metrics = metrics
        self.counter = counter
        self._warned: set[str] = set()

    # --- before -------------------------------------------------------------------------
    async def on_request(self, ex: Exchange) -> None:
        route = ex.route
        assert route is not None
        if self.loops.repeated_tool_call is not None:
            rc = self.loops.repeated_tool_call
            found = loops.repeated_call(ex.endpoint.name, ex.body, rc.threshold)
            if found is not None:
                self._loop(ex, "repeated_tool_call", rc.action, found.evidence())
        adm = Admission(session=ex.session, agent=ex.agent)
        self._rate_checks(ex, adm)
        if self.budgets.any and ex.endpoint.billable:
            self._budget_checks(ex, adm)
        if self.loops.stateful:
            lc = self.loops
            adm.loop = LoopCheck(
                session=ex.session, agent=ex.agent,
                fingerprint=hashlib.blake2b(ex.raw, digest_size=8).hexdigest()
                if lc.repeated_request else None,
                fp_window_s=lc.repeated_request.window_s if lc.repeated_request else 0,
                steps=bool(lc.max_steps or lc.max_duration),
                chain=(ex.parent_session or ex.session) if lc.ping_pong else None)
        verdict = await admit(self.state, adm, self.fail_closed)
        if verdict.degraded:
            ex.flags.append("unguarded:state_down")
        if not verdict.allowed:
            self._refuse(ex, adm, verdict)
        ex.settlement = Settlement(budgets=[(bc, 0.0) for bc in adm.budgets],
                                   token_rates=[(rc, 0) for rc in adm.rates
                                                if rc.label.endswith("tpm")])
        if adm.loop is not None and not verdict.degraded:
            self._check_loops(ex, verdict)
        self._after_admission(ex, adm, verdict)

    def _rate_checks(self, ex: Exchange, adm: Admission) -> None:
        r = self.rates
        if not r.any:
            return
        tokens = max(1, ex.prompt_tokens_counted)
        agent = r.agents.get(ex.agent) or r.default_agent
        if agent is not None:
            _add_rates(adm, "agent", ex.agent, agent, tokens)
        if r.per_key is not None and ex.key_id is not None:
            _add_rates(adm, "key", ex.key_id, r.per_key, tokens)
        model = r.models.get(ex.model_name)
        if model is not None:
            _add_rates(adm, "model", ex.model_name, model, tokens)

    def _budget_checks(self, ex: Exchange, adm: Admission) -> None:
        route = ex.route
        assert route is not None
        b = self.budgets
        out_tokens = _max_output(ex.body) or b.default_output_tokens
        reserve = route.cost(ex.prompt_tokens_counted, out_tokens, 0, 0)
        adm.budgets += budget_checks(b, ex.agent, ex.team, ex.session, reserve)

    def _refuse(self, ex: Exchange, adm: Admission, v: Verdict) -> None:
        ex.guard = (f"rate:{v.rate.label}" if v.denied_by == "rate" and v.rate else
                    f"budget:{v.budget.scope}" if v.denied_by == "budget" and v.budget else
                    v.denied_by or "denied")
        raise refusal(self.metrics, ex.session, ex.agent, v)

    def _check_loops(self, ex: Exchange, v: Verdict) -> None:
        lc = self.loops
        if lc.repeated_request and v.repeats >= lc.repeated_request.threshold:
            self._loop(ex, "repeated_request", lc.repeated_request.action,
                       f"the same request was sent {v.repeats} times within "
                       f"{lc.repeated_request.window_s:.0f}s in session {ex.session!r}")
        if lc.max_steps and v.steps > lc.max_steps.limit:
            self._loop(ex, "max_steps", lc.max_steps.action,
                       f"session {ex.session!r} reached step {v.steps}; the limit is "
                       f"{lc.max_steps.limit}")
        if lc.max_duration and v.age_s > lc.max_duration.seconds:
            self._loop(ex, "max_duration", lc.max_duration.action,
                       f"session {ex.session!r} has run for {v.age_s:.0f}s; the limit is "
                       f"{lc.max_duration.seconds:.0f}s")
        # A round is there and back: two hand-offs between agents.
        if lc.ping_pong and v.rounds > 2 * lc.ping_pong.max_rounds:
            chain = ex.parent_session or ex.session
            self._loop(ex, "ping_pong", lc.ping_pong.action,
                       f"the task in session {chain!r} has been handed between agents "
                       f"{v.rounds} times, more than {lc.ping_pong.max_rounds} rounds")

    def _loop(self, ex: Exchange, detector: str, action: str, evidence: str) -> None:
        self.metrics.loops_detected.labels(detector, ex.agent).inc()
        log.warning("loop detected", extra={"fields": {
            "detector": detector, "action": action, "agent": ex.agent, "session": ex.session,
            "request_id": ex.request_id, "evidence": evidence}})
        if action == "halt":
            ex.guard = f"loop:{detector}"
            raise GatewayError(422, "loop_detected", f"loop detected ({detector}): {evidence}")
        ex.flags.append(f"loop_alert:{detector}")

    def _after_admission(self, ex: Exchange, adm: Admission, v: Verdict) -> None:
        headers = ex.response_headers
        for rc, (remaining, reset) in zip(adm.rates, v.rate_state, strict=False):
            kind = "tokens" if rc.label.endswith("tpm") else "requests"
            if f"x-ratelimit-limit-{kind}" in headers:
                continue  # the first (agent) limit of each kind speaks for the request
            headers[f"x-ratelimit-limit-{kind}"] = str(rc.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, remaining))
            headers[f"x-ratelimit-reset-{kind}"] = f"{reset:.3f}s"
        if not adm.budgets or v.degraded:
            return
        least = math.inf
        for bc, (spent, reserved) in zip(adm.budgets, v.budget_state, strict=False):
            ex.budget_shares[bc.scope] = spent / bc.limit
            left = bc.limit - spent - reserved
            least = min(least, left)
            if bc.scope in ("agent", "team", "global"):
                self.metrics.child(self.metrics.budget_remaining, bc.scope, bc.name).set(
                    max(0.0, left - bc.reserve))
            if (spent + reserved + bc.reserve) >= self.budgets.soft_threshold * bc.limit:
                self._soft(ex, bc, spent + reserved + bc.reserve)
        headers["x-tollway-budget-remaining-usd"] = f"{max(0.0, least):.6f}"
        if ex.stream:
            ex.stream_allowance_usd = max(0.0, least)

    def _soft(self, ex: Exchange, bc: BudgetCheck, committed: float) -> None:
        key = bc.key
        if key in self._warned:
            return
        if len(self._warned) > 50_000:
            self._warned.clear()
        self._warned.add(key)
        self.metrics.budget_soft_limit.labels(bc.scope).inc()
        log.warning("budget soft threshold reached", extra={"fields": {
            "scope": bc.scope, "name": bc.name, "period": bc.period_key, "limit_usd": bc.limit,
            "committed_usd": round(committed, 6), "threshold": self.budgets.soft_threshold,
            "agent": ex.agent, "session": ex.session}})

    # --- during a stream ----------------------------------------------------------------
    def chunk_hook(self, ex: Exchange, observer: StreamObserver) -> None:
        """End a stream whose running cost passes what its budgets have left."""
        allowance = ex.stream_allowance_usd
        route = ex.route
        if allowance is None or route is None or not route.price.output:
            return
        per_token = route.price.output / 1e6
        budget_tokens = (allowance - route.cost(ex.prompt_tokens_counted, 0, 0, 0)) / per_token
        capture = observer.capture
        if capture.nbytes <= budget_tokens:
            return  # a token is at least a byte: cannot be over yet
        # Count only what arrived since the last count: a long stream near its budget is
        # not re-tokenised from the start on every chunk.
        counted, produced = ex.stream_counted
        if len(capture.pieces) > counted:
            produced += self.counter.count_text(route.encoding, capture.text(counted))
            ex.stream_counted = (len(capture.pieces), produced)
        if produced > budget_tokens:
            raise GatewayError(402, "budget_exceeded",
                               f"budget exceeded mid-stream: the answer reached {produced} "
                               f"tokens, which is all the remaining budget "
                               f"(${allowance:.4f}) allows")

    # --- after --------------------------------------------------------------------------
    async def on_response(self, ex: Exchange) -> None:
        settle = ex.settlement
        if settle is None:
            return
        settle.budgets = [(bc, ex.cost_usd) for bc, _ in settle.budgets]
        if settle.token_rates:
            u = ex.usage
            actual = (u.total_input + u.output) if u is not None else 0
            delta = actual - max(1, ex.prompt_tokens_counted) if ex.upstream_started else 0
            settle.token_rates = [(rc, delta) for rc, _ in settle.token_rates]


def _add_rates(adm: Admission, kind: str, name: str, limit: RateLimit, tokens: int) -> None:
    if limit.rpm:
        adm.rates.append(RateCheck(f"{kind}:{name}:rpm", f"{kind}_rpm", limit.rpm, 1,
                                   limit.burst))
    if limit.tpm:
        adm.rates.append(RateCheck(f"{kind}:{name}:tpm", f"{kind}_tpm", limit.tpm, tokens,
                                   limit.burst))


def _describe(rc: RateCheck) -> str:
    kind, name, _ = rc.key.split(":", 2)
    return f"{kind} {name!r}" if kind != "key" else "this key"


def _max_output(body: dict[str, Any]) -> int | None:
    for k in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        v = body.get(k)
        if isinstance(v, int) and v > 0:
            return v
    return None


def budget_checks(b: BudgetsConfig, agent: str, team: str, session: str, reserve: float,
                  ) -> list[BudgetCheck]:
    """Every budget a call of this agent, team and session spends from, reserving `reserve`."""
    checks = []
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


def refusal(metrics: Metrics, session: str, agent: str, v: Verdict) -> GatewayError:
    """The error for an admission the State refused."""
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
                            f"flight, and this request could cost up to ${bc.reserve:.4f} "
                            f"(set max_tokens to reserve less)",
                            headers={"x-tollway-budget-scope": bc.scope})
    return GatewayError(403, "policy_denied", "refused by the gateway")


async def admit(state: State, adm: Admission, fail_closed: bool) -> Verdict:
    """The State's verdict; with the state unreachable, 503 (fail_closed) or a degraded
    pass with nothing reserved, so only the real cost is settled (fail_open)."""
    try:
        return await state.guards.admit(adm)
    except StateUnavailable as exc:
        if fail_closed:
            raise GatewayError(503, "state_unavailable",
                               "the gateway's shared state is unreachable and it is "
                               "configured to fail closed", retry_after=1) from exc
        for bc in adm.budgets:
            bc.reserve = 0.0
        return Verdict(degraded=True)
