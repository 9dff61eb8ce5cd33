"""Resumable streams: the answers a POST stream still owed when the server closed it to be
resumed (SSE polling), kept for a GET with Last-Event-ID in the same MCP session, or until the
server's `timeout_s` passes (a failure)."""

from __future__ import annotations

import asyncio

from tollway.tools.gate import FAILURE
from tollway.tools.mcp.ledger import _RpcLedger
from tollway.tools.mcp.settle import Settler


class ParkedStreams:
    """The answers owed on streams closed to be resumed, by MCP server and session."""

    def __init__(self, settler: Settler) -> None:
        self.settler = settler
        # Answers still owed on streams the server closed to be resumed (SSE polling): a GET
        # with Last-Event-ID in the same MCP session delivers them. Key: server, session id.
        self._parked: dict[tuple[str, str], _RpcLedger] = {}

    # --- resumable streams ---------------------------------------------------------------
    def park(self, ledger: _RpcLedger, session_id: str) -> None:
        """Keep what `ledger` still waits for until a GET with Last-Event-ID brings it, for at
        most the server's timeout_s."""
        key = (ledger.server, session_id)
        parked = self._parked.get(key)
        if parked is not ledger:
            if parked is None:
                parked = self._parked[key] = _RpcLedger(ledger.server, ledger.srv)
            parked.pending.update(ledger.pending)
            ledger.pending.clear()
        if parked.timer is not None:
            parked.timer.cancel()
        parked.timer = asyncio.get_running_loop().call_later(
            ledger.srv.timeout_s, lambda: self.settler.spawn(self._expire(key, parked)))

    async def _expire(self, key: tuple[str, str], ledger: _RpcLedger) -> None:
        if self._parked.get(key) is ledger:
            del self._parked[key]
        await self.settler.settle_unanswered(ledger, FAILURE, 504)

    def get(self, server: str, session_id: str) -> _RpcLedger | None:
        return self._parked.get((server, session_id))

    def done(self, server: str, session_id: str, parked: _RpcLedger) -> None:
        """A resumed stream ended: forget `parked` if it owes nothing more."""
        if not parked.pending and self._parked.get((server, session_id)) is parked:
            del self._parked[(server, session_id)]
            if parked.timer is not None:
                parked.timer.cancel()

    async def drop(self, server: str, session_id: str) -> None:
        """A DELETE ends the MCP session: what it is still owed is settled as cancelled."""
        parked = self._parked.pop((server, session_id), None)
        if parked is not None:
            if parked.timer is not None:
                parked.timer.cancel()
            await self.settler.settle_unanswered(parked, "cancelled", 499)

    async def close(self) -> None:
        """Shutting down: what the parked streams still owe is settled as cancelled."""
        for key, ledger in list(self._parked.items()):
            self._parked.pop(key, None)
            await self.settler.settle_unanswered(ledger, "cancelled", 499)
