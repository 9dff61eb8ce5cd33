"""Everything tool traffic needs, built from one config (a reload builds a new one)."""

from __future__ import annotations

from typing import Any

from tollway.config.model import Config
from tollway.guardrails.act import Enforcer
from tollway.guardrails.engine import Guardrails
from tollway.guardrails.tools import ToolGuardrails
from tollway.observe.metrics import Metrics
from tollway.policy.approvals import ApprovalDesk
from tollway.policy.identity import Identity
from tollway.routing.breakers import BreakerBoard
from tollway.state.base import State
from tollway.tools.gate import ToolGate
from tollway.tools.http import HttpTools
from tollway.tools.mcp import McpProxy


class ToolPlane:
    def __init__(self, cfg: Config, state: State, metrics: Metrics, board: BreakerBoard,
                 identity: Identity, desk: ApprovalDesk, guardrails: Guardrails | None = None,
                 audit: Any = None) -> None:
        checks = None
        if guardrails is not None and guardrails.rules.places() & {"tool_args",
                                                                   "tool_results"}:
            checks = ToolGuardrails(Enforcer(guardrails, desk, audit,
                                             cfg.policy.approval_timeout_s))
        self.gate = ToolGate(cfg, state, metrics, board, identity, desk, checks)
        self.http = HttpTools(cfg, self.gate, metrics)
        self.mcp = McpProxy(cfg, self.gate, metrics)

    async def close(self) -> None:
        await self.http.close()
        await self.mcp.close()
