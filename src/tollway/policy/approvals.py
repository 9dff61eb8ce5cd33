"""Calls held for a human's approval, whoever holds them: the tool gate (a red-zone call
through /tools or MCP) and the policy stage (a red-zone call a model emitted in its answer).

The approval is put in the State's tool facet, so any replica lists it
(`GET /admin/approvals`) and decides it (`POST /admin/approvals/{id}`). The holder waits for
the decision: woken at once when it was decided through this process (`wake`), else it looks
every `_POLL_S`, until the policies' `approvals.timeout_s`, after which it counts as rejected.
The desk lives as long as the process, so a call held across a config reload is still woken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from tollway.errors import GatewayError
from tollway.observe.metrics import Metrics
from tollway.state.base import State, StateUnavailable
from tollway.state.toolstate import APPROVED, EXPIRED, PENDING, Approval

log = logging.getLogger("tollway.approvals")
_POLL_S = 0.1  # how often a held call looks at its approval


@dataclass(frozen=True, slots=True)
class Decision:
    """How an approval ended: approved, rejected or expired, and by whom and why."""

    approval: Approval
    status: str
    timeout_s: float

    @property
    def approved(self) -> bool:
        return self.status == APPROVED

    def why(self) -> str:
        """Why the call may not go ahead, for the refusal the agent reads."""
        a = self.approval
        if self.status == EXPIRED:
            return f"approval {a.id} was not given within {round(self.timeout_s, 1):g}s"
        return (f"approval {a.id} was rejected by {a.decided_by}"
                + (f": {a.reason}" if a.reason else ""))


class ApprovalDesk:
    def __init__(self, state: State, metrics: Metrics) -> None:
        self.state = state
        self.metrics = metrics
        self.held: dict[str, asyncio.Event] = {}  # approvals this process waits on

    async def open(self, a: Approval) -> None:
        """Put the approval where every replica sees it; 503 when the state is down (a
        red-zone call is never let through unapproved)."""
        try:
            await self.state.tools.approval_put(a)
        except StateUnavailable as exc:
            raise GatewayError(503, "state_unavailable", "a red-zone tool call needs an "
                               "approval, and the shared state that holds approvals is "
                               "unreachable", retry_after=1) from exc
        self.held[a.id] = asyncio.Event()
        log.warning("tool call held for approval", extra={"fields": {
            "approval": a.id, "tool": a.tool, "agent": a.agent, "session": a.session,
            "origin": a.origin, "timeout_s": round(a.expires - time.time(), 3)}})

    async def wait(self, a: Approval) -> Decision:
        """Wait for an opened approval's decision (or its deadline); counts it."""
        event = self.held.setdefault(a.id, asyncio.Event())
        decided: Approval | None = None
        try:
            while time.time() < a.expires:
                with_wait = min(_POLL_S, max(0.0, a.expires - time.time()))
                try:
                    async with asyncio.timeout(with_wait):
                        await event.wait()
                except TimeoutError:
                    pass
                event.clear()
                try:
                    decided = await self.state.tools.approval_get(a.id)
                except StateUnavailable:
                    continue
                if decided is not None and decided.status != PENDING:
                    break
        finally:
            self.held.pop(a.id, None)
        if decided is not None and decided.status != PENDING:
            status = decided.status
        else:
            decided, status = a, EXPIRED
        self.metrics.child(self.metrics.approvals, a.tool, status).inc()
        return Decision(decided, status, a.expires - a.created)

    async def hold(self, a: Approval) -> Decision:
        await self.open(a)
        return await self.wait(a)

    def wake(self, approval_id: str) -> None:
        """An approval was decided through this process: its waiter need not poll."""
        event = self.held.get(approval_id)
        if event is not None:
            event.set()
