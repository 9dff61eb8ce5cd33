"""Tool calls a model emits, held to the same policies as tool calls an agent makes.

Only requests that offer tools, from agents whose tools are restricted (by a policy or by
their key), are looked at, so everyone else pays nothing. A response naming a tool the agent
may not use is, per `model_tool_calls`: `block` - non-streamed, the call is replaced by a text
the agent can read (and the turn ends when no call is left); streamed, the stream ends with a
`policy_denied` error event before the call's first byte; `flag` - passed, counted and logged.
"""

from __future__ import annotations

import logging
from typing import Any

from tollway.errors import GatewayError
from tollway.exchange import Body, Exchange
from tollway.observe.metrics import Metrics
from tollway.policy.identity import Identity
from tollway.protocols.answers import TOOL_MARKERS, response_tool_names, stream_tool_names

log = logging.getLogger("tollway.policy")


class ModelToolCalls:
    def __init__(self, identity: Identity, metrics: Metrics, mode: str) -> None:
        self.identity = identity
        self.metrics = metrics
        self.mode = mode

    def applies(self, ex: Exchange) -> bool:
        if self.mode == "off" or not ex.body.get("tools"):
            return False
        return self.identity.tools_restricted(ex.caller)

    def _forbidden(self, ex: Exchange, names: list[str]) -> list[str]:
        caller = ex.caller
        bad = [n for n in names if not self.identity.may_call(caller, n)]
        for name in bad:
            self.metrics.child(self.metrics.model_tool_calls, caller.agent, name,
                               self.mode).inc()
            self.metrics.child(self.metrics.policy_denials, "model_tool_call",
                               caller.agent).inc()
            log.warning("model emitted a tool call the agent may not use", extra={"fields": {
                "agent": caller.agent, "session": ex.run.session, "tool": name,
                "action": self.mode, "request_id": ex.request_id, "model": ex.model_name}})
        ex.flags += [f"model_tool_call:{self.mode}:{n}" for n in bad]
        if bad:
            ex.response_headers["x-tollway-policy"] = (
                "blocked" if self.mode == "block" else "flagged") + ":" + ",".join(bad)
        return bad

    # --- whole responses --------------------------------------------------------------
    def whole(self, ex: Exchange, answer: Body) -> None:
        if not any(m in answer.payload for m in TOOL_MARKERS):
            return
        body = answer.json()
        if not isinstance(body, dict):
            return
        bad = self._forbidden(ex, response_tool_names(body))
        if not bad or self.mode != "block":
            return
        agent = ex.caller.agent
        note = (f"[tollway] blocked tool call(s) {', '.join(bad)}: agent {agent!r} may not "
                f"use {'them' if len(bad) > 1 else 'it'} (policy). Continue without "
                f"{'them' if len(bad) > 1 else 'it'}.")
        _block(body, set(bad), note)
        answer.replace(body)

    # --- streams ----------------------------------------------------------------------
    def chunk(self, ex: Exchange, out: bytes) -> None:
        """Sees each chunk the client is about to get; raises to end the stream."""
        if not any(m in out for m in TOOL_MARKERS):
            return
        bad = self._forbidden(ex, stream_tool_names(out))
        if bad and self.mode == "block":
            raise GatewayError(403, "policy_denied",
                               f"the model called tool(s) {', '.join(bad)}, which agent "
                               f"{ex.caller.agent!r} may not use (policy); the response was "
                               "stopped")


def _block(body: dict[str, Any], bad: set[str], note: str) -> None:
    for choice in body.get("choices") or ():
        msg = choice.get("message") or {}
        calls = [c for c in msg.get("tool_calls") or ()
                 if (c.get("function") or {}).get("name") not in bad]
        msg["content"] = ((msg.get("content") or "") + ("\n" if msg.get("content") else "")
                          + note)
        if calls:
            msg["tool_calls"] = calls
        else:
            msg.pop("tool_calls", None)
            choice["finish_reason"] = "stop"
    if body.get("type") == "message":
        content = [b for b in body.get("content") or ()
                   if not (b.get("type") == "tool_use" and b.get("name") in bad)]
        content.append({"type": "text", "text": note})
        body["content"] = content
        if not any(b.get("type") == "tool_use" for b in content):
            body["stop_reason"] = "end_turn"
    if "output" in body:
        body["output"] = [o for o in body["output"]
                          if not (o.get("type") == "function_call" and o.get("name") in bad)]
        body["output"].append({"type": "message", "role": "assistant", "status": "completed",
                               "content": [{"type": "output_text", "text": note,
                                            "annotations": []}]})
