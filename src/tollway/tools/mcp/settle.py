"""Settling answers: a call's answer (a result, isError, a JSON-RPC error) settles its ticket
on the gate, a tool list is filtered to what the caller may call, and the calls left without an
answer (the server failed, the client went away) are settled too."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tollway.errors import GatewayError
from tollway.tools.gate import FAILURE, OK, TOOL_ERROR, ToolGate, ToolResult
from tollway.tools.mcp.ledger import _Pending, _RpcLedger
from tollway.tools.mcp.messages import _INTERNAL_ERROR, _dumps, _json, _key, rpc_error


class Settler:
    """Settles the calls of a ledger on the gate, as their answers come or fail to."""

    def __init__(self, gate: ToolGate) -> None:
        self.gate = gate
        self._tasks: set[asyncio.Task[None]] = set()

    async def release(self, ledger: _RpcLedger) -> None:
        for p in ledger.calls:
            await self.gate.release(p.ticket)  # type: ignore[arg-type]

    async def fail_post(self, ledger: _RpcLedger, forward: list[Any], batch: bool,
                        err: GatewayError, rid: str, status: int | None = None,
                        retry_after_s: float | None = None) -> web.Response:
        """The server did not answer (or answered 5xx): every forwarded request gets the
        error, naming its tool; the calls count as failures."""
        answers = list(ledger.refusals)
        for m in forward:
            if not isinstance(m, dict) or "id" not in m or "method" not in m:
                continue
            p = ledger.pending.get(_key(m["id"]))
            tool = p.tool if p is not None else None
            e = err
            if tool is not None:
                e = GatewayError(err.status, err.code, f"tool {tool!r}: {err.message}",
                                 retry_after=err.retry_after)
            answers.append(rpc_error(m["id"], e, tool))
        for p in ledger.calls:
            await self.gate.settle(p.ticket, status or err.status, FAILURE,  # type: ignore[arg-type]
                                   None, retry_after_s=retry_after_s, charged=False)
        ledger.pending.clear()
        body: Any = answers if batch else (answers[0] if answers else
                                          rpc_error(None, err))
        return _json(err.status, body, CIMultiDict({"x-tollway-request-id": rid}))

    # --- answers -------------------------------------------------------------------------
    def _filter_tools(self, p: _Pending, msg: dict[str, Any]) -> dict[str, Any] | None:
        result = msg.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            return None
        may = self.gate.identity.may_call
        kept = [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
                and may(p.caller, f"{p.server}/{t['name']}")]
        if len(kept) == len(tools):
            return None
        return {**msg, "result": {**result, "tools": kept}}  # type: ignore[dict-item]

    async def _settle_answer(self, p: _Pending, msg: dict[str, Any], status: int) -> None:
        ticket = p.ticket
        assert ticket is not None
        if "result" in msg:
            result = msg["result"]
            is_error = isinstance(result, dict) and result.get("isError") is True
            outcome = (FAILURE if ticket.tool.fail_on_error else TOOL_ERROR) if is_error else OK
            if isinstance(result, dict):  # _meta may carry per-call noise (ids, timings)
                result = {k: v for k, v in result.items() if k != "_meta"}
            await self.gate.settle(ticket, status, outcome,
                                   ToolResult(_dumps(result, canonical=True),
                                              _result_text(result)))
            return
        error = msg.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        if code == _INTERNAL_ERROR:
            await self.gate.settle(ticket, status, FAILURE, None, charged=False)
        else:
            raw = _dumps({"error": error}, canonical=True)
            await self.gate.settle(ticket, status, TOOL_ERROR, ToolResult(raw), charged=False)

    async def _guard_result(self, p: _Pending, msg: dict[str, Any]) -> dict[str, Any]:
        """A call's result through the guardrails: the message to pass on (a redacted copy,
        or a JSON-RPC error when a rule blocks it; the call was made and is charged)."""
        checks, ticket = self.gate.guardrails, p.ticket
        if checks is None or ticket is None or "result" not in msg \
                or not checks.applies("tool_results", p.caller, ticket.tool.name):
            return msg
        try:
            checked = await checks.check("tool_results", p.caller, ticket.session,
                                         ticket.request_id, ticket.tool.name,
                                         copy.deepcopy(msg["result"]), ticket.flags)
        except GatewayError as err:
            return rpc_error(msg["id"], err, ticket.tool.name)
        return {**msg, "result": checked.value} if checked.changed else msg

    async def on_messages(self, ledger: _RpcLedger, msgs: list[Any], status: int,
                          ) -> list[Any] | None:
        """Settle the calls these messages answer, filter the tool lists; the messages to
        pass on, or None when none changed."""
        out: list[Any] | None = None
        for i, m in enumerate(msgs):
            if not (isinstance(m, dict) and "id" in m and ("result" in m or "error" in m)):
                continue
            p = ledger.pending.pop(_key(m["id"]), None)
            if p is None:
                continue
            if p.kind == "call":
                checked = await self._guard_result(p, m)
                await self._settle_answer(p, checked if "result" in checked else m, status)
                if checked is not m:
                    out = out if out is not None else list(msgs)
                    out[i] = checked
                continue
            new = self._filter_tools(p, m)
            if new is not None:
                out = out if out is not None else list(msgs)
                out[i] = new
        return out

    async def settle_unanswered(self, ledger: _RpcLedger, outcome: str, status: int,
                                err: GatewayError | None = None) -> list[dict[str, Any]]:
        """Settle the calls still owed an answer with `outcome`; returns the JSON-RPC errors
        to send for them when `err` is given. "cancelled": the client went away; the call was
        made but its outcome is unknown, so it counts for nothing on the breaker."""
        errors = []
        for k, p in list(ledger.pending.items()):
            ledger.pending.pop(k, None)
            if p.kind != "call" or p.ticket is None:
                continue
            if outcome == "cancelled":
                p.ticket.tool = replace(p.ticket.tool, breaker=None)
                await self.gate.settle(p.ticket, status, outcome, None)
                continue
            await self.gate.settle(p.ticket, status, outcome, None, charged=False)
            if err is not None:
                errors.append(rpc_error(p.rpc_id, GatewayError(
                    err.status, err.code, f"tool {p.tool!r}: {err.message}",
                    retry_after=err.retry_after), p.tool))
        return errors

    def abandon(self, ledger: _RpcLedger) -> None:
        """The handler is being cancelled: settle what `ledger` waits for in the background."""
        if ledger.pending:
            left = _RpcLedger(ledger.server, ledger.srv, dict(ledger.pending))
            ledger.pending.clear()
            self.spawn(self.settle_unanswered(left, "cancelled", 499))

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        """Shutting down: the settlements still running in the background are cancelled."""
        for task in list(self._tasks):
            task.cancel()


def _result_text(result: Any) -> str | None:
    """What an MCP result says, for no_progress: its text content, without the JSON that
    wraps it (whose `isError: false` would read as trouble); None (compare the JSON) when
    it has no text."""
    content = result.get("content") if isinstance(result, dict) else None
    if not isinstance(content, list):
        return None
    texts = [c["text"] for c in content
             if isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str)]
    if len(texts) != len(content) or not texts:
        return None
    return "\n".join(texts)
