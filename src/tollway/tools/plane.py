"""Everything tool traffic needs, built from one config (a reload builds a new one)."""

from __future__ import annotations

from tollway.config.model import Config
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
                 identity: Identity, desk: ApprovalDesk) -> None:
        self.gate = ToolGate(cfg, state, metrics, board, identity, desk)
        self.http = HttpTools(cfg, self.gate, metrics)
        self.mcp = McpProxy(cfg, self.gate, metrics)

    async def close(self) -> None:
        await self.http.close()
        await self.mcp.close()
