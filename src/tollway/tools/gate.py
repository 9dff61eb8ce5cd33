"""The tool gate: what every tool call goes through, whatever its transport (HTTP or MCP).

Before the call, in order: the caller's key limits and the policies (403 `policy_denied`),
the loop detectors (422 `loop_detected`: `repeated_tool_call`, the same tool with the same
arguments returned the same result N times in a row in this session; `no_progress`, the
tool answered the same normalised result N times in a row whatever the arguments; one
state round trip for both), the tool's circuit breaker (503
`breaker_open` with Retry-After), the kill switch and the budgets with the call's configured
cost reserved (402), and the tool's risk zone: yellow is flagged, red is held until a human
approves it through the admin API (or it times out: 403). After the call: its outcome on the
breaker, its cost on the session's, agent's and team's spend, the result for the loop
detectors (one round trip), and the metrics. The transports only decide what a failure is
and speak the error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from tollway.config.model import Config
from tollway.config.tools import ToolBreakerConfig
from tollway.errors import GatewayError
from tollway.exchange import Caller
from tollway.guardrails.tools import ToolGuardrails
from tollway.loops.results import fingerprint
from tollway.observe.metrics import Metrics
from tollway.policy.admission import admit, budget_checks, refusal
from tollway.policy.approvals import ApprovalDesk
from tollway.policy.identity import Identity
from tollway.protocols import conversation
from tollway.providers.registry import breaker_policy as registry_breaker_policy
from tollway.routing.breakers import BreakerBoard
from tollway.state.base import State, StateUnavailable
from tollway.state.breakers import OPEN, BreakerOutcome, BreakerPolicy
from tollway.state.guards import Admission, Settlement
from tollway.state.lineage import LineageQuery
from tollway.state.records import StepRecord
from tollway.state.toolstate import Approval, ResultNote

log = logging.getLogger("tollway.tools")
OK, TOOL_ERROR, FAILURE = "ok", "tool_error", "failure"
_LOOP_WINDOW_S = 3600.0  # a run of repeated results is forgotten after an hour of quiet


def breaker_policy(b: ToolBreakerConfig | bool | None) -> BreakerPolicy | None:
    return registry_breaker_policy(b) if isinstance(b, ToolBreakerConfig) else None


@dataclass(frozen=True, slots=True)
class ToolTarget:
    """One tool as the gate sees it; `target` and `breaker` make it a breaker target."""

    name: str  # "weather" (HTTP) or "files/read_file" (MCP <server>/<tool>)
    server: str  # "http" or the MCP server's name: the spend's provider
    cost_usd: float = 0.0
    breaker: BreakerPolicy | None = None
    fail_on_error: bool = False  # the tool's own errors count against its breaker
    fallback: str | None = None

    @property
    def target(self) -> str:
        return f"tool:{self.name}"


@dataclass(slots=True)
class Ticket:
    """An admitted call: what settle() needs."""

    caller: Caller
    session: str
    tool: ToolTarget
    call: str  # digest of the tool and its arguments
    request_id: str
    probe: bool = False
    settlement: Settlement | None = None
    zone: str = "green"
    approval: str | None = None
    started: float = field(default_factory=time.perf_counter)
    wall_start: float = field(default_factory=time.time)
    settled: bool = False
    flags: list[str] = field(default_factory=list)  # guardrails', for the step


def call_digest(tool: str, *parts: bytes) -> str:
    h = hashlib.blake2b(tool.encode(), digest_size=12)
    for p in parts:
        h.update(b"\0" + p)
    return h.hexdigest()


def result_digest(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool answered, for the loop detectors: `raw`, the bytes compared exactly
    (repeated_tool_call); `text`, what no_progress normalises and compares (the raw bytes
    decoded when None: an MCP result's text content, say, rather than its JSON wrapper)."""

    raw: bytes
    text: str | None = None

    def readable(self) -> str:
        return self.text if self.text is not None else self.raw.decode("utf-8", "replace")


class ToolGate:
    def __init__(self, cfg: Config, state: State, metrics: Metrics, board: BreakerBoard,
                 identity: Identity, desk: ApprovalDesk,
                 guardrails: ToolGuardrails | None = None) -> None:
        self.cfg = cfg
        self.guardrails = guardrails  # arguments and results, when policies ask
        self.state = state
        self.metrics = metrics
        self.board = board
        self.identity = identity
        self.policy = cfg.policy
        self.fail_closed = cfg.state.on_failure == "fail_closed"
        self.trust_session_header = cfg.identity.trust_session_header
        self.desk = desk  # red-zone calls held for approval
        ident = cfg.identity
        self.lineage_window_s = ident.lineage_window_s if ident.lineage else None

    def session(self, headers: Mapping[str, str], caller: Caller,
                default: str | None = None) -> str:
        """x-tollway-session when trusted; else the transport's own (an MCP session), else
        the agent's tool calls of the day (UTC): a bucket whose session budget resets daily.
        Either is only where a call lands when no model answer of the agent emitted it
        (`call_keys`)."""
        named = self._named(headers)
        if named:
            return named
        return default or f"tools-{caller.agent}-{time.strftime('%Y-%m-%d', time.gmtime())}"

    def _named(self, headers: Mapping[str, str]) -> str | None:
        named = headers.get("x-tollway-session") if self.trust_session_header else None
        if named:  # bytes that are not UTF-8 (kept by aiohttp as surrogates) become U+FFFD
            return named[:128].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return None

    def call_keys(self, headers: Mapping[str, str], tool: str, args: Any) -> list[str]:
        """What finds the model answer that emitted this call (its session is the call's):
        the answer's call id when the agent passes it (x-tollway-call-id), else the tool's
        name and arguments, or the arguments alone. None to look for when the session is
        named, or lineage is off."""
        if self.lineage_window_s is None or self._named(headers):
            return []
        keys = conversation.tool_keys(tool, args)
        call_id = headers.get("x-tollway-call-id")
        if call_id:
            keys.insert(0, conversation.call_key(call_id.encode(
                "utf-8", "surrogateescape").decode("utf-8", "replace")))
        return keys

    # --- before ------------------------------------------------------------------------
    async def admit(self, caller: Caller, session: str, tool: ToolTarget, call: str,
                    request_id: str, summary: str, keys: Sequence[str] = ()) -> Ticket:
        """`keys`: what finds the answer that emitted this call (`call_keys`); found, the
        call joins that answer's session (resolved in the state admission, which comes
        first so the loop detectors count in the session the call belongs to)."""
        ticket = Ticket(caller, session, tool, call, request_id)
        try:
            self.identity.check_tool(caller, tool.name)
        except GatewayError:
            self._count(tool, "denied")
            self.metrics.child(self.metrics.policy_denials, "tool", caller.agent).inc()
            raise
        await self._admit_state(ticket, keys)
        try:
            await self._check_loop(ticket)
            view = self.board.views.get(tool.target)
            if tool.breaker is not None and view is not None and view.state == OPEN and (
                    time.time() < view.until):  # fail fast
                self._breaker_open(tool, view.until - time.time())
            ticket.zone = self.policy.zone(tool.name)
            if ticket.zone != "green":
                self.metrics.child(self.metrics.tool_flagged, tool.name, ticket.zone).inc()
                log.warning("tool call in a %s zone", ticket.zone, extra={"fields": {
                    "tool": tool.name, "agent": caller.agent, "session": ticket.session,
                    "request_id": request_id, "zone": ticket.zone}})
            if ticket.zone == "red":
                await self._hold(ticket, summary)
            # Last: a half-open probe slot is only taken by a call that will be made.
            allowed, ticket.probe, wait = await self.board.check(tool)  # type: ignore[arg-type]
            if not allowed:
                self._breaker_open(tool, wait)
        except BaseException:
            await asyncio.shield(self.release(ticket))
            raise
        ticket.started = time.perf_counter()  # the tool's latency, not the approval's wait
        return ticket

    def _breaker_open(self, tool: ToolTarget, wait: float) -> NoReturn:
        self._count(tool, "breaker_open")
        retry = max(1.0, wait)
        raise GatewayError(
            503, "breaker_open", f"tool {tool.name!r} is failing and its circuit breaker "
            f"is open; it will be tried again in {retry:.0f}s", retry_after=retry,
            headers={"x-tollway-tool": tool.name})

    async def _check_loop(self, t: Ticket) -> None:
        loops = self.cfg.loops
        rc, np = loops.repeated_tool_call, loops.no_progress
        if rc is None and np is None:
            return
        try:
            seen = await self.state.tools.repeats(t.session, t.call if rc else None,
                                                  t.tool.name if np else None)
        except StateUnavailable:
            return
        if rc is not None and seen.call >= rc.threshold:
            self._loop(t, "repeated_tool_call", rc.action,
                       f"tool {t.tool.name!r} was called {seen.call} times with the same "
                       f"arguments and returned the same result each time in session "
                       f"{t.session!r}")
        if np is not None and seen.tool >= np.threshold:
            self._loop(t, "no_progress", np.action,
                       f"tool {t.tool.name!r} answered the same result {seen.tool} times in a "
                       f"row in session {t.session!r}, whatever its arguments "
                       f"({seen.result!r}, ids and times normalised)")

    def _loop(self, t: Ticket, detector: str, action: str, evidence: str) -> None:
        self.metrics.loops_detected.labels(detector, t.caller.agent, action).inc()
        log.warning("loop detected", extra={"fields": {
            "detector": detector, "action": action, "agent": t.caller.agent,
            "session": t.session, "tool": t.tool.name, "request_id": t.request_id,
            "evidence": evidence}})
        if action == "halt":
            self._count(t.tool, "loop")
            raise GatewayError(422, "loop_detected", f"loop detected ({detector}): {evidence}")

    async def _admit_state(self, t: Ticket, keys: Sequence[str]) -> None:
        budgets = (budget_checks(self.cfg.budgets, t.caller.agent, t.caller.team, t.session,
                                 t.tool.cost_usd, t.caller)
                   if (self.cfg.budgets.any or t.caller.quota is not None)
                   and t.tool.cost_usd else [])
        if not (self.cfg.kill_switch or budgets or keys):
            return
        query = None
        if keys:
            query = LineageQuery(t.caller.agent, t.session, answers=list(keys),
                                 window_s=self.lineage_window_s or 0.0)
        adm = Admission(session=t.session, agent=t.caller.agent, budgets=budgets,
                        request_id=t.request_id, hold_s=self.cfg.budgets.reservation_ttl_s,
                        lineage=query)
        verdict = await admit(self.state, adm, self.fail_closed)
        if verdict.lineage is not None:
            t.session = verdict.lineage.session
        if not verdict.allowed:
            self._count(t.tool, "budget" if verdict.denied_by == "budget" else "denied")
            raise refusal(self.metrics, t.session, t.caller.agent, verdict, tool=t.tool.name)
        t.settlement = Settlement(request_id=t.request_id,
                                  budgets=[(bc, 0.0) for bc in budgets])

    async def _hold(self, t: Ticket, summary: str) -> None:
        a = Approval(tool=t.tool.name, agent=t.caller.agent, team=t.caller.team,
                     session=t.session, summary=summary[:500],
                     expires=time.time() + self.policy.approval_timeout_s)
        t.approval = a.id
        decision = await self.desk.hold(a)  # 503 when the state is down: admit releases
        if decision.approved:
            return
        await self.release(t)
        self._count(t.tool, "rejected")
        raise GatewayError(403, "policy_denied", f"tool {t.tool.name!r} is in the red zone and "
                           f"needs an approval; {decision.why()}")

    def wake(self, approval_id: str) -> None:
        """An approval was decided through this process: its waiter need not poll."""
        self.desk.wake(approval_id)

    # --- after -------------------------------------------------------------------------
    async def release(self, t: Ticket) -> None:
        """The call was never made: undo the reservation, count nothing."""
        if t.settled:
            return
        t.settled = True
        if t.settlement is not None and t.settlement.budgets:
            try:
                await self.state.ledger.record(None, t.settlement)
            except Exception:
                log.exception("could not release the reservation of %s", t.request_id)

    async def settle(self, t: Ticket, status: int, outcome: str, result: ToolResult | None,
                     retry_after_s: float | None = None, charged: bool = True) -> None:
        """Record a call that was made. `charged`: the tool answered, so its cost is spent.
        `result`: what it answered, when there is one to compare (None: the tool did not
        answer, or the answer was too large to keep)."""
        if t.settled:
            return
        t.settled = True
        latency = time.perf_counter() - t.started
        tool = t.tool
        self._count(tool, outcome)
        self.metrics.child(self.metrics.tool_duration, tool.name).observe(latency)
        cost = tool.cost_usd if charged else 0.0
        settle = t.settlement or Settlement(request_id=t.request_id)
        settle.budgets = [(bc, cost) for bc, _ in settle.budgets]
        if tool.breaker is not None:
            settle.breakers = [BreakerOutcome(tool.target, outcome != FAILURE, latency,
                                              tool.breaker, t.probe, retry_after_s)]
        step = StepRecord(
            request_id=t.request_id, time=t.wall_start, agent=t.caller.agent, team=t.caller.team,
            session=t.session, endpoint="tool", model=tool.name, requested_model=tool.name,
            provider=tool.server, status=status, cost_usd=cost, latency_s=round(latency, 6),
            error_code=None if outcome == OK else outcome, usage_source="tool",
            flags=tuple(f for f in (f"zone:{t.zone}" if t.zone != "green" else "",
                                    f"approved:{t.approval}" if t.approval else "",
                                    *t.flags) if f))
        if cost:
            self.metrics.child(self.metrics.cost, t.caller.agent, t.caller.team,
                               tool.name).inc(cost)
        try:
            transitions = await self.state.ledger.record(step, settle)
        except Exception:
            log.exception("could not record tool call %s", t.request_id)
            transitions = []
        if transitions:
            self.board.on_transitions(transitions)
        note = self._result_note(t, status, outcome, result)
        if note is not None:
            try:
                await self.state.tools.note_result(t.session, note, _LOOP_WINDOW_S)
            except StateUnavailable:
                pass

    def _result_note(self, t: Ticket, status: int, outcome: str,
                     result: ToolResult | None) -> ResultNote | None:
        """What the loop detectors note of a result. With no result to compare, the call's
        run ends (repeated_tool_call) and the tool's is left as it is: the tool did not
        answer, which is its breaker's business. A bare acknowledgement ends the tool's run;
        the HTTP status is part of a result (a 500 and a 200 saying the same are not)."""
        loops = self.cfg.loops
        rc, np = loops.repeated_tool_call, loops.no_progress
        if rc is None and (np is None or result is None):
            return None
        note = ResultNote()
        if rc is not None:
            note = ResultNote(t.call, result_digest(result.raw) if result is not None else None)
        if np is not None and result is not None:
            fp = fingerprint(result.readable(), error=outcome != OK)
            excerpt = fp.excerpt if status < 400 else f"{status} {fp.excerpt}"
            note = ResultNote(note.call, note.result, t.tool.name,
                              None if fp.ack else f"{status}:{fp.digest}", excerpt)
        return note

    def _count(self, tool: ToolTarget, outcome: str) -> None:
        self.metrics.child(self.metrics.tool_calls, tool.name, outcome).inc()
