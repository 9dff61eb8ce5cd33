"""Tool calls a model emits, held to the same policies as tool calls an agent makes.

Only requests that offer tools, from agents whose tools are restricted (by a policy or by
their key), are looked at, so everyone else pays nothing. A response naming a tool the agent
may not use is, per `model_tool_calls`: `block` - non-streamed, the call is replaced by a text
the agent can read (and the turn ends when no call is left); streamed, the stream ends with a
`policy_denied` error event before the call's first byte; `flag` - passed, counted and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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
            add_policy_header(ex, "blocked" if self.mode == "block" else "flagged", bad)
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
        names = set(bad)
        strip_calls(body, lambda name, _: name in names, note)
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


def add_policy_header(ex: Exchange, what: str, names: list[str]) -> None:
    """Add `<what>:<tool>,...` to x-tollway-policy (several are separated by "; ")."""
    value = f"{what}:{','.join(dict.fromkeys(names))}"
    found = ex.response_headers.get("x-tollway-policy")
    ex.response_headers["x-tollway-policy"] = f"{found}; {value}" if found else value


def strip_calls(body: dict[str, Any], drop: Callable[[str, str | None], bool],
                note: str) -> None:
    """Remove the tool calls `drop(name, id)` picks from a whole answer (any dialect) and
    add `note` as text the agent reads; a turn left without a call ends."""
    for choice in body.get("choices") or ():
        msg = choice.get("message") or {}
        calls = [c for c in msg.get("tool_calls") or ()
                 if not drop(str((c.get("function") or {}).get("name", "")), _id(c.get("id")))]
        msg["content"] = ((msg.get("content") or "") + ("\n" if msg.get("content") else "")
                          + note)
        if calls:
            msg["tool_calls"] = calls
        else:
            msg.pop("tool_calls", None)
            choice["finish_reason"] = "stop"
    if body.get("type") == "message":
        content = [b for b in body.get("content") or ()
                   if not (b.get("type") == "tool_use"
                           and drop(str(b.get("name", "")), _id(b.get("id"))))]
        content.append({"type": "text", "text": note})
        body["content"] = content
        if not any(b.get("type") == "tool_use" for b in content):
            body["stop_reason"] = "end_turn"
    if "output" in body:
        body["output"] = [o for o in body["output"]
                          if not (o.get("type") == "function_call"
                                  and drop(str(o.get("name", "")),
                                           _id(o.get("call_id") or o.get("id"))))]
        body["output"].append({"type": "message", "role": "assistant", "status": "completed",
                               "content": [{"type": "output_text", "text": note,
                                            "annotations": []}]})


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) else None
