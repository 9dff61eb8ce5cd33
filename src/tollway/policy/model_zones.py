"""Risk zones on the tool calls a model emits, as on the tool gateway: red is held for a
human's approval, yellow is flagged.

A model's answer that calls a red-zone tool (`zones.red` of the policies, matched against
the function's name as the agent declared it) is an executable instruction to the agent, so
it is held before the agent gets it, through the same approvals as a red call made through
/tools or MCP (the State's approvals, `GET /admin/approvals`, `POST /admin/approvals/{id}`,
`tollway_approvals_total`, the audit line of the decision):

- streamed: only the event that starts the red call is held, not the text before it: that
  text goes out first (`Chunk.ready`), then nothing more is read from the provider until the
  approval is decided. Approved: the stream goes on unchanged. Rejected or timed out: the
  stream ends with a `policy_denied` error event in the client's dialect. The approver sees
  the call's name and whatever arguments its first event carried (the rest follows it);
- whole: approved, the answer is sent unchanged; rejected or timed out, the call is
  replaced by a text the agent can read (as model_calls.py's block does).

A yellow-zone call is passed and flagged: `x-tollway-policy: flagged:<tool>` on a whole answer
(a stream's headers are gone by then), the step's flags, the log and
`tollway_model_tool_calls_flagged_total{action="yellow"}`. Only requests that offer tools
are looked at, and per stream event group only a bytes search runs until a call starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

from tollway.errors import GatewayError
from tollway.exchange import Body, Chunk, Exchange
from tollway.observe.metrics import Metrics
from tollway.policy.approvals import ApprovalDesk, Decision
from tollway.policy.model import PolicySet
from tollway.policy.model_calls import add_policy_header, strip_calls
from tollway.protocols.answers import (
    NAME_MARKER,
    ToolCall,
    response_tool_calls,
    stream_tool_calls,
)
from tollway.state.toolstate import Approval

log = logging.getLogger("tollway.policy")


class ModelZones:
    """The zones of the policies, applied to model answers; one `AnswerZones` per answer."""

    def __init__(self, policy: PolicySet, metrics: Metrics, desk: ApprovalDesk) -> None:
        self.policy = policy
        self.metrics = metrics
        self.desk = desk

    def answer(self) -> AnswerZones:
        return AnswerZones(self)

    def note(self, ex: Exchange, call: ToolCall, zone: str) -> None:
        agent = ex.caller.agent
        self.metrics.child(self.metrics.model_tool_calls, agent, call.name, zone).inc()
        ex.flags.append(f"model_tool_call:{zone}:{call.name}")
        log.warning("model emitted a %s-zone tool call", zone, extra={"fields": {
            "agent": agent, "session": ex.run.session, "tool": call.name, "zone": zone,
            "request_id": ex.request_id, "model": ex.model_name}})

    async def hold(self, ex: Exchange, calls: list[ToolCall], streamed: bool,
                   stop_at_first: bool) -> list[Decision]:
        """Open an approval per red call (all at once: an approver sees them together), then
        wait for each in turn; `stop_at_first`: stop at the first that is not approved."""
        caller = ex.caller
        expires = time.time() + self.policy.approval_timeout_s
        approvals = [Approval(tool=c.name, agent=caller.agent, team=caller.team,
                              session=ex.run.session, summary=_summary(ex, c, streamed),
                              expires=expires, origin="model") for c in calls]
        for a in approvals:
            await self.desk.open(a)
        decisions = []
        for a in approvals:
            d = await self.desk.wait(a)
            decisions.append(d)
            ex.flags.append(f"{'approved' if d.approved else 'rejected'}:{a.id}")
            if stop_at_first and not d.approved:
                break
        return decisions


class AnswerZones:
    """One answer's red and yellow calls; a stream's calls are decided once each (a
    Responses stream names a call again when it is done)."""

    __slots__ = ("seen", "zones")

    def __init__(self, zones: ModelZones) -> None:
        self.zones = zones
        self.seen: set[tuple[str, str]] = set()

    def _sort(self, ex: Exchange, calls: list[ToolCall]) -> list[ToolCall]:
        """Flag the yellow calls; the red ones, to hold. A call without an id is never
        taken for one already decided."""
        red = []
        zone_of = self.zones.policy.zone
        for c in calls:
            if c.id is not None:
                if (c.name, c.id) in self.seen:
                    continue
                self.seen.add((c.name, c.id))
            zone = zone_of(c.name)
            if zone == "green":
                continue
            self.zones.note(ex, c, zone)
            if zone == "red":
                red.append(c)
            elif zone == "yellow" and not ex.stream:
                add_policy_header(ex, "flagged", [c.name])
        return red

    # --- streams ----------------------------------------------------------------------
    def chunk(self, ex: Exchange, chunk: Chunk) -> Awaitable[None] | None:
        """Hold the stream at the first event that starts a red call; the events before it
        go out first."""
        data = chunk.data
        if NAME_MARKER not in data:
            return None
        red = self._sort(ex, stream_tool_calls(data))
        if not red:
            return None
        at = red[0].offset
        chunk.ready, chunk.data = chunk.ready + data[:at], data[at:]
        return self._held_stream(ex, red)

    async def _held_stream(self, ex: Exchange, red: list[ToolCall]) -> None:
        decisions = await self.zones.hold(ex, red, streamed=True, stop_at_first=True)
        refused = next((d for d in decisions if not d.approved), None)
        if refused is not None:
            raise GatewayError(403, "policy_denied",
                               f"the model called tool {refused.approval.tool!r}, which is in "
                               f"the red zone and needs an approval; {refused.why()}; the "
                               "response was stopped before the call")

    # --- whole answers ----------------------------------------------------------------
    async def whole(self, ex: Exchange, answer: Body) -> None:
        if NAME_MARKER not in answer.payload:
            return
        body = answer.json()
        if not isinstance(body, dict):
            return
        red = self._sort(ex, response_tool_calls(body))
        if not red:
            return
        decisions = await self.zones.hold(ex, red, streamed=False, stop_at_first=False)
        approved = [d.approval.tool for d in decisions if d.approved]
        refused = [(c, d) for c, d in zip(red, decisions, strict=True) if not d.approved]
        if approved:
            add_policy_header(ex, "approved", approved)
        if not refused:
            return
        add_policy_header(ex, "rejected", [c.name for c, _ in refused])
        drop = {(c.name, c.id) for c, _ in refused}
        note = " ".join(f"[tollway] tool call {c.name} was not delivered: it is in the red "
                        f"zone and needs an approval; {d.why()}." for c, d in refused)
        strip_calls(body, lambda name, cid: (name, cid) in drop,
                    note + " Continue without it.")
        answer.replace(body)


def _summary(ex: Exchange, call: ToolCall, streamed: bool) -> str:
    args = call.arguments if call.arguments not in ("", "{}") else ""
    if len(args) > 400:
        args = args[:397] + "..."
    what = (f"model {ex.model_name} answered with a call to {call.name}"
            + (f"({args})" if args else "()"))
    if streamed:
        what += " [streamed: " + ("its arguments follow" if not args else
                                  "more of its arguments may follow") + " once approved]"
    return f"{what}; request {ex.request_id}"[:500]
