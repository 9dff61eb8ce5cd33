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

from tollway.config.model import Config, RateLimit
from tollway.errors import GatewayError
from tollway.exchange import Chunk, Exchange
from tollway.observe.metrics import Metrics
from tollway.policy.admission import admit, budget_checks, refusal
from tollway.stages.base import Stage
from tollway.stages.guard import loops
from tollway.state.base import State
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
        assert ex.target.route is not None
        caller, session = ex.caller, ex.run.session
        rc, np = self.loops.repeated_tool_call, self.loops.no_progress
        if rc is not None or np is not None:
            answered = loops.answered(ex.endpoint.name, ex.body)  # once, for both
            if rc is not None:
                found = loops.repeated_call(answered, rc.threshold)
                if found is not None:
                    self._loop(ex, "repeated_tool_call", rc.action, found.evidence())
            if np is not None:
                stuck = loops.no_progress(answered, np.threshold)
                if stuck is not None:
                    self._loop(ex, "no_progress", np.action, stuck.evidence())
        adm = Admission(session=session, agent=caller.agent, request_id=ex.request_id,
                        hold_s=self.budgets.reservation_ttl_s, lineage=ex.run.query)
        self._rate_checks(ex, adm)
        if (self.budgets.any or caller.quota is not None) and ex.endpoint.billable:
            self._budget_checks(ex, adm)
        if self.loops.stateful:
            lc = self.loops
            adm.loop = LoopCheck(
                session=session, agent=caller.agent,
                fingerprint=hashlib.sha256(ex.raw).hexdigest()[:16]
                if lc.repeated_request else None,
                fp_window_s=lc.repeated_request.window_s if lc.repeated_request else 0,
                steps=bool(lc.max_steps or lc.max_duration),
                chain=(ex.run.parent or session) if lc.ping_pong else None)
        verdict = await admit(self.state, adm, self.fail_closed)
        if verdict.lineage is not None:
            ex.follow(verdict.lineage)
        if verdict.degraded:
            ex.flags.append("unguarded:state_down")
        if not verdict.allowed:
            self._refuse(ex, adm, verdict)
        ex.guard.settlement = Settlement(request_id=ex.request_id,
                                         budgets=[(bc, 0.0) for bc in adm.budgets],
                                   token_rates=[(rc, 0) for rc in adm.rates
                                                if rc.label.endswith("tpm")])
        if adm.loop is not None and not verdict.degraded:
            self._check_loops(ex, verdict)
        self._after_admission(ex, adm, verdict)

    def _rate_checks(self, ex: Exchange, adm: Admission) -> None:
        r = self.rates
        caller = ex.caller
        own_rpm = caller.quota.rpm if caller.quota is not None else None
        if not r.any and own_rpm is None:
            return
        tokens = max(1, ex.prompt.counted)
        agent = r.agents.get(caller.agent) or r.default_agent
        if agent is not None:
            _add_rates(adm, "agent", caller.agent, agent, tokens)
        per_key = r.per_key
        if own_rpm is not None:  # a runtime key's own rpm replaces rate_limits.per_key's
            per_key = (per_key.model_copy(update={"rpm": own_rpm}) if per_key is not None
                       else RateLimit(rpm=own_rpm))
        if per_key is not None and caller.key_id is not None:
            _add_rates(adm, "key", caller.key_id, per_key, tokens)
        model = r.models.get(ex.model_name)
        if model is not None:
            _add_rates(adm, "model", ex.model_name, model, tokens)

    def _budget_checks(self, ex: Exchange, adm: Admission) -> None:
        route = ex.target.route
        assert route is not None
        b = self.budgets
        out_tokens = _max_output(ex.body) or b.default_output_tokens
        reserve = route.cost(ex.prompt.counted, out_tokens, 0, 0)
        adm.budgets += budget_checks(b, ex.caller.agent, ex.caller.team, ex.run.session,
                                     reserve, ex.caller)

    def _refuse(self, ex: Exchange, adm: Admission, v: Verdict) -> None:
        ex.guard.refused_by = (
            f"rate:{v.rate.label}" if v.denied_by == "rate" and v.rate else
            f"budget:{v.budget.scope}" if v.denied_by == "budget" and v.budget else
            v.denied_by or "denied")
        raise refusal(self.metrics, ex.run.session, ex.caller.agent, v)

    def _check_loops(self, ex: Exchange, v: Verdict) -> None:
        lc = self.loops
        session = ex.run.session
        if lc.repeated_request and v.repeats >= lc.repeated_request.threshold:
            self._loop(ex, "repeated_request", lc.repeated_request.action,
                       f"the same request was sent {v.repeats} times within "
                       f"{lc.repeated_request.window_s:.0f}s in session {session!r}")
        if lc.max_steps and v.steps > lc.max_steps.limit:
            self._loop(ex, "max_steps", lc.max_steps.action,
                       f"session {session!r} reached step {v.steps}; the limit is "
                       f"{lc.max_steps.limit}")
        if lc.max_duration and v.age_s > lc.max_duration.seconds:
            self._loop(ex, "max_duration", lc.max_duration.action,
                       f"session {session!r} has run for {v.age_s:.0f}s; the limit is "
                       f"{lc.max_duration.seconds:.0f}s")
        # A round is there and back: two hand-offs between agents.
        if lc.ping_pong and v.rounds > 2 * lc.ping_pong.max_rounds:
            chain = ex.run.parent or session
            self._loop(ex, "ping_pong", lc.ping_pong.action,
                       f"the task in session {chain!r} has been handed between agents "
                       f"{v.rounds} times, more than {lc.ping_pong.max_rounds} rounds")

    def _loop(self, ex: Exchange, detector: str, action: str, evidence: str) -> None:
        agent = ex.caller.agent
        self.metrics.loops_detected.labels(detector, agent, action).inc()
        log.warning("loop detected", extra={"fields": {
            "detector": detector, "action": action, "agent": agent, "session": ex.run.session,
            "request_id": ex.request_id, "evidence": evidence}})
        if action == "halt":
            ex.guard.refused_by = f"loop:{detector}"
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
        shares = ex.guard.budget_shares = {}
        for bc, (spent, reserved) in zip(adm.budgets, v.budget_state, strict=False):
            shares[bc.scope] = spent / bc.limit
            left = bc.limit - spent - reserved
            least = min(least, left)
            if bc.scope in ("agent", "team", "global"):
                self.metrics.child(self.metrics.budget_remaining, bc.scope, bc.name).set(
                    max(0.0, left - bc.reserve))
            if (spent + reserved + bc.reserve) >= self.budgets.soft_threshold * bc.limit:
                self._soft(ex, bc, spent + reserved + bc.reserve)
        headers["x-tollway-budget-remaining-usd"] = f"{max(0.0, least):.6f}"
        if ex.stream:
            ex.guard.stream_allowance_usd = max(0.0, least)
            ex.hooks.append(self)  # to end the stream when its cost reaches the allowance

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
            "agent": ex.caller.agent, "session": ex.run.session}})

    # --- during a stream ----------------------------------------------------------------
    def on_chunk(self, ex: Exchange, chunk: Chunk) -> None:
        """End a stream whose running cost passes what its budgets have left."""
        allowance = ex.guard.stream_allowance_usd
        route = ex.target.route  # forward may have moved it to a fallback: price that one
        if (allowance is None or route is None or not route.price.output
                or chunk.observer is None or not chunk.data):
            return
        per_token = route.price.output / 1e6
        budget_tokens = (allowance - route.cost(ex.prompt.counted, 0, 0, 0)) / per_token
        capture = chunk.observer.capture
        if capture.nbytes <= budget_tokens:
            return  # a token is at least a byte: cannot be over yet
        # Count only what arrived since the last count: a long stream near its budget is
        # not re-tokenised from the start on every chunk.
        counted, produced = ex.guard.stream_counted
        if len(capture.pieces) > counted:
            produced += self.counter.count_text(route.encoding, capture.text(counted))
            ex.guard.stream_counted = (len(capture.pieces), produced)
        if produced > budget_tokens:
            raise GatewayError(402, "budget_exceeded",
                               f"budget exceeded mid-stream: the answer reached {produced} "
                               f"tokens, which is all the remaining budget "
                               f"(${allowance:.4f}) allows")

    # --- after --------------------------------------------------------------------------
    async def on_response(self, ex: Exchange) -> None:
        settle = ex.guard.settlement
        if settle is None:
            return
        out = ex.outcome
        settle.budgets = [(bc, out.cost_usd) for bc, _ in settle.budgets]
        if settle.token_rates:
            u = out.usage
            actual = (u.total_input + u.output) if u is not None else 0
            delta = actual - max(1, ex.prompt.counted) if ex.upstream.started else 0
            settle.token_rates = [(rc, delta) for rc, _ in settle.token_rates]


def _add_rates(adm: Admission, kind: str, name: str, limit: RateLimit, tokens: int) -> None:
    if limit.rpm:
        adm.rates.append(RateCheck(f"{kind}:{name}:rpm", f"{kind}_rpm", limit.rpm, 1,
                                   limit.burst))
    if limit.tpm:
        adm.rates.append(RateCheck(f"{kind}:{name}:tpm", f"{kind}_tpm", limit.tpm, tokens,
                                   limit.burst))


def _max_output(body: dict[str, Any]) -> int | None:
    for k in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        v = body.get(k)
        if type(v) is int and v > 0:  # not a bool
            return v
    return None
