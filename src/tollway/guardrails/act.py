"""What a verdict does, wherever it was reached (a prompt, an answer, a tool's arguments or
its result): the most severe action of the rules that found something wins.

- block: a 403 `guardrail` error in the caller's dialect (a JSON-RPC error on MCP) naming
  the rules and the kinds of what they found, never the values;
- hold: an approval on the same desk as red-zone tool calls (console, admin API,
  `origin: guardrail`); approved, the request goes on as it is; rejected or expired: 403;
- redact: the values are replaced in place (placeholders or masks);
- flag: passed, noted.
Every hit is a step flag (`guardrail:<action>:<rule>:<ENTITY>`) and, with the audit log on,
an audit entry with the rule, detector, entity, place and position: the value never leaves
the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tollway.errors import GatewayError
from tollway.exchange import Caller

from .engine import Guardrails, Verdict
from .redact import Redactor
from .slots import Slot

log = logging.getLogger("tollway.guardrails")


@dataclass(slots=True)
class Context:
    caller: Caller
    session: str
    request_id: str
    where: str  # prompt, answer, tool_args, tool_results
    name: str  # the model or the tool
    flags: list[str]


def blocked(verdict: Verdict, ctx: Context) -> GatewayError:
    what = "answer" if ctx.where == "answer" else (
        "result" if ctx.where == "tool_results" else "request")
    return GatewayError(403, "guardrail",
                        f"guardrail {verdict.summary('block')}: the {what} was refused")


async def hold(verdict: Verdict, ctx: Context, desk: Any, timeout_s: float) -> None:
    if desk is None:
        raise GatewayError(403, "guardrail", f"guardrail {verdict.summary('hold')} needs an "
                                             "approval, and there is no approval desk here")
    from tollway.state.toolstate import Approval

    a = Approval(tool=f"guardrail:{verdict.rules('hold')[0].name}", agent=ctx.caller.agent,
                 team=ctx.caller.team, session=ctx.session,
                 summary=(f"guardrail {verdict.summary('hold')} ({ctx.name}); "
                          f"request {ctx.request_id}")[:500],
                 expires=time.time() + timeout_s, origin="guardrail")
    await desk.open(a)
    d = await desk.wait(a)
    ctx.flags.append(f"{'approved' if d.approved else 'rejected'}:{a.id}")
    if not d.approved:
        raise GatewayError(403, "guardrail", f"guardrail {verdict.summary('hold')} was held "
                                             f"for approval; {d.why()}")


def note(verdict: Verdict, ctx: Context, audit: Any, recent: Any = None) -> None:
    seen: set[str] = set()
    now = time.time()
    for h in verdict.hits:
        flag = f"guardrail:{h.rule.action}:{h.rule.name}:{h.finding.entity}"
        if flag not in seen and flag not in ctx.flags:
            ctx.flags.append(flag)
        seen.add(flag)
        event = {"rule": h.rule.name, "action": h.rule.action, "detector": h.finding.detector,
                 "entity": h.finding.entity, "where": h.kind, "name": ctx.name,
                 "start": h.finding.start, "end": h.finding.end, "text": h.slot,
                 "agent": ctx.caller.agent, "session": ctx.session,
                 "request_id": ctx.request_id}
        if audit is not None:
            audit.append("guardrail", event)
        if recent is not None:
            recent.append({**event, "time": now})
    log.warning("guardrail %s", verdict.action, extra={"fields": {
        "rules": verdict.summary(), "where": ctx.where, "name": ctx.name,
        "agent": ctx.caller.agent, "session": ctx.session, "request_id": ctx.request_id}})


@dataclass(slots=True)
class Enforcer:
    """The guardrails and what their actions need (the approval desk, the audit log), as
    the model stage and the tool gate both use them."""

    g: Guardrails
    desk: Any = None
    audit: Any = None
    hold_timeout_s: float = 300.0

    def act(self, verdict: Verdict, slots: Sequence[Slot], redactor: Redactor,
            ctx: Context) -> str | None:
        """What can be done at once: note every hit, refuse on a block (GatewayError 403
        `guardrail`), redact. Returns the action (None: nothing found); a "hold" is then
        the caller's to wait for (`hold`), which `enforce` does."""
        if verdict.unscanned and "guardrail:unscanned" not in ctx.flags:
            ctx.flags.append("guardrail:unscanned")
        action = verdict.action
        if action is None:
            return None
        note(verdict, ctx, self.audit, self.g.recent)
        if action == "block":
            raise blocked(verdict, ctx)
        if any(h.rule.action == "redact" for h in verdict.hits):
            redactor.apply(slots, verdict.hits)
        return action

    async def hold(self, verdict: Verdict, ctx: Context) -> None:
        await hold(verdict, ctx, self.desk, self.hold_timeout_s)

    async def enforce(self, verdict: Verdict, slots: Sequence[Slot], redactor: Redactor,
                      ctx: Context) -> str | None:
        """act(), then wait for a hold's approval (403 when it is not given)."""
        action = self.act(verdict, slots, redactor, ctx)
        if action == "hold":
            await self.hold(verdict, ctx)
        return action
