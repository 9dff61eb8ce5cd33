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

import orjson

from tollway.errors import GatewayError
from tollway.exchange import Caller, Exchange
from tollway.observe.metrics import Metrics
from tollway.policy.identity import Identity
from tollway.protocols.sse import data_of

log = logging.getLogger("tollway.policy")
_MARKERS = (b'"tool_use"', b'"function"', b'"function_call"')


class ModelToolCalls:
    def __init__(self, identity: Identity, metrics: Metrics, mode: str) -> None:
        self.identity = identity
        self.metrics = metrics
        self.mode = mode

    def applies(self, ex: Exchange) -> bool:
        if self.mode == "off" or not ex.body.get("tools"):
            return False
        who: Caller | None = ex.who
        limited = who is not None and who.limits is not None and who.limits.tools is not None
        return limited or self.identity.policy.restricts

    def _forbidden(self, ex: Exchange, names: list[str]) -> list[str]:
        who = ex.who
        if who is None:
            return []
        bad = [n for n in names if not self.identity.may_call(who, n)]
        for name in bad:
            self.metrics.child(self.metrics.model_tool_calls, ex.agent, name, self.mode).inc()
            self.metrics.child(self.metrics.policy_denials, "model_tool_call", ex.agent).inc()
            log.warning("model emitted a tool call the agent may not use", extra={"fields": {
                "agent": ex.agent, "session": ex.session, "tool": name, "action": self.mode,
                "request_id": ex.request_id, "model": ex.model_name}})
        ex.flags += [f"model_tool_call:{self.mode}:{n}" for n in bad]
        if bad:
            ex.response_headers["x-tollway-policy"] = (
                "blocked" if self.mode == "block" else "flagged") + ":" + ",".join(bad)
        return bad

    # --- whole responses --------------------------------------------------------------
    def whole(self, ex: Exchange, payload: bytes) -> bytes:
        if not any(m in payload for m in _MARKERS):
            return payload
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload
        if not isinstance(body, dict):
            return payload
        bad = self._forbidden(ex, response_tool_names(body))
        if not bad or self.mode != "block":
            return payload
        note = (f"[tollway] blocked tool call(s) {', '.join(bad)}: agent {ex.agent!r} may not "
                f"use {'them' if len(bad) > 1 else 'it'} (policy). Continue without "
                f"{'them' if len(bad) > 1 else 'it'}.")
        _block(body, set(bad), note)
        return orjson.dumps(body)

    # --- streams ----------------------------------------------------------------------
    def chunk(self, ex: Exchange, out: bytes) -> None:
        """Sees each chunk the client is about to get; raises to end the stream."""
        if not any(m in out for m in _MARKERS):
            return
        bad = self._forbidden(ex, stream_tool_names(out))
        if bad and self.mode == "block":
            raise GatewayError(403, "policy_denied",
                               f"the model called tool(s) {', '.join(bad)}, which agent "
                               f"{ex.agent!r} may not use (policy); the response was stopped")


def stream_tool_names(out: bytes) -> list[str]:
    """Names of the tool calls that start in these SSE events (any dialect)."""
    if not any(m in out for m in _MARKERS):
        return []
    names = []
    for marker in _MARKERS:
        if marker in out:
            for event in data_of(out, marker):
                names += _stream_names(event)
    return list(dict.fromkeys(names))


def response_text(body: dict[str, Any]) -> str:
    """The text of a whole response in any dialect."""
    parts = []
    for choice in body.get("choices") or ():
        content = (choice.get("message") or {}).get("content") or choice.get("text")
        if isinstance(content, str):
            parts.append(content)
    for block in body.get("content") or ():
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    for item in body.get("output") or ():
        for c in (item.get("content") or ()) if isinstance(item, dict) else ():
            if isinstance(c, dict) and c.get("type") == "output_text":
                parts.append(str(c.get("text", "")))
    return "".join(parts)


def response_tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for choice in body.get("choices") or ():  # OpenAI chat
        for call in ((choice.get("message") or {}).get("tool_calls") or ()):
            names.append(str((call.get("function") or {}).get("name", "")))
    if body.get("type") == "message":  # Anthropic
        names += [str(b.get("name", "")) for b in body.get("content") or ()
                  if isinstance(b, dict) and b.get("type") == "tool_use"]
    names += [str(o.get("name", "")) for o in body.get("output") or ()  # Responses
              if isinstance(o, dict) and o.get("type") == "function_call"]
    return names


def _stream_names(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return []
    names = []
    for choice in event.get("choices") or ():
        for call in ((choice.get("delta") or {}).get("tool_calls") or ()):
            name = (call.get("function") or {}).get("name")
            if name:
                names.append(str(name))
    block = event.get("content_block")
    if isinstance(block, dict) and block.get("type") == "tool_use":
        names.append(str(block.get("name", "")))
    item = event.get("item")
    if isinstance(item, dict) and item.get("type") == "function_call":
        names.append(str(item.get("name", "")))
    return names


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
