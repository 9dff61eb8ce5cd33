"""Tool-gateway state: repeated tool results per session, and calls held for approval.

Both backends keep the same semantics. Two kinds of repeat counter hold the digest of the
last result and how many times in a row it came back, and expire `window_s` after the last
call: one per (session, call: the tool and its arguments), for `repeated_tool_call`, and one
per (session, tool) over normalised results, whatever the arguments, for `no_progress` (it
also keeps the start of that result, the evidence a halt shows). Both are read in one round
trip before a call and noted in one after it. An approval is a small record that any replica
may list and decide; the replica holding the call polls it until it is decided or times out.

This module holds the data and the interface; the backends implement it in
tollway.state.memory.tools and tollway.state.redis.tools.
"""

from __future__ import annotations

import abc
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

PENDING, APPROVED, REJECTED, EXPIRED = "pending", "approved", "rejected", "expired"
KEEP_DECIDED_S = 3600.0  # decided approvals stay listable this long


@dataclass(slots=True)
class Approval:
    tool: str
    agent: str
    team: str
    session: str
    summary: str  # what the call is: method and path, or the MCP arguments (truncated)
    expires: float  # epoch seconds: undecided by then, rejected
    id: str = field(default_factory=lambda: "apr_" + uuid.uuid4().hex[:16])
    created: float = field(default_factory=time.time)
    status: str = PENDING
    decided_by: str | None = None
    reason: str | None = None
    decided_at: float | None = None
    origin: str = "tool"  # "tool": a call through /tools or MCP; "model": one a model emitted

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.status == PENDING and time.time() >= self.expires:
            d["status"] = EXPIRED
        return d


@dataclass(frozen=True, slots=True)
class Repeats:
    """How often, in a row, a session saw one result: of this call (tool and arguments), and
    of this tool whatever the arguments (normalised: `result` is its start)."""

    call: int = 0
    tool: int = 0
    result: str = ""


@dataclass(frozen=True, slots=True)
class ResultNote:
    """A call's result to note. `call`/`result`: the call's digest and its exact result's
    (None: not tracked; a result of None ends the call's run). `tool`/`same`/`excerpt`: the
    tool, its normalised result's digest and start (tool None: not tracked; same None ends
    the tool's run: an acknowledgement)."""

    call: str | None = None
    result: str | None = None
    tool: str | None = None
    same: str | None = None
    excerpt: str = ""


class ToolState(abc.ABC):
    @abc.abstractmethod
    async def repeats(self, session: str, call: str | None, tool: str | None) -> Repeats:
        """The runs of a call and of a tool in a session (0 for one not asked)."""

    @abc.abstractmethod
    async def note_result(self, session: str, note: ResultNote, window_s: float) -> Repeats:
        """Record a call's result; returns how many times in a row each has been this one."""

    @abc.abstractmethod
    async def approval_put(self, a: Approval) -> None: ...

    @abc.abstractmethod
    async def approval_get(self, approval_id: str) -> Approval | None: ...

    @abc.abstractmethod
    async def approvals(self) -> list[Approval]:
        """Pending ones and those decided within the last hour, oldest first."""

    @abc.abstractmethod
    async def approval_decide(self, approval_id: str, approve: bool, by: str,
                              reason: str | None) -> Approval | None:
        """Decide a pending, unexpired approval (None when there is none); a decided one is
        returned unchanged, so a second decision cannot overturn the first."""
