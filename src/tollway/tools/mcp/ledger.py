"""The bookkeeping of one POST's JSON-RPC requests (or of a resumed stream's): the calls and
tool lists it waits to see answered, and what it refused up front."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from tollway.config.tools import McpServerConfig
from tollway.exchange import Caller
from tollway.tools.gate import Ticket


@dataclass(slots=True)
class _Pending:
    """A request the gateway waits to see answered: a gated tools/call or a tools/list."""

    kind: str  # "call" | "list"
    caller: Caller
    server: str
    ticket: Ticket | None = None
    rpc_id: Any = None

    @property
    def tool(self) -> str | None:
        return self.ticket.tool.name if self.ticket is not None else None


@dataclass(slots=True)
class _RpcLedger:
    """One POST (or a resumed stream): what it waits for, and what it refused up front."""

    server: str
    srv: McpServerConfig
    pending: dict[bytes, _Pending] = field(default_factory=dict)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None

    @property
    def calls(self) -> list[_Pending]:
        return [p for p in self.pending.values() if p.kind == "call"]

