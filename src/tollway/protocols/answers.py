"""What a model's answer says, in any dialect: its text and the tools it called.

Whole answers are read from their parsed JSON; streams a group of whole SSE events at a
time, parsing only the events that can start a tool call (they carry one of the markers).
"""

from __future__ import annotations

from typing import Any

from tollway.protocols.sse import data_of

TOOL_MARKERS = (b'"tool_use"', b'"function"', b'"function_call"')


def stream_tool_names(out: bytes) -> list[str]:
    """Names of the tool calls that start in these SSE events (any dialect)."""
    return list(dict.fromkeys(name for name, _ in stream_calls(out)))


def stream_calls(out: bytes) -> list[tuple[str, str | None]]:
    """(name, call id) of the tool calls that start in these SSE events (any dialect)."""
    if not any(m in out for m in TOOL_MARKERS):
        return []
    calls: list[tuple[str, str | None]] = []
    for marker in TOOL_MARKERS:
        if marker in out:
            for event in data_of(out, marker):
                calls += _stream_calls(event)
    return list(dict.fromkeys(calls))


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
    return [name for name, _ in response_calls(body)]


def response_calls(body: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(name, call id) of the tool calls a whole answer makes, in any dialect."""
    calls: list[tuple[str, str | None]] = []
    for choice in body.get("choices") or ():  # OpenAI chat
        for call in (_dict(_dict(choice).get("message")).get("tool_calls") or ()):
            call = _dict(call)
            calls.append((str(_dict(call.get("function")).get("name", "")), _id(call.get("id"))))
    if body.get("type") == "message":  # Anthropic
        calls += [(str(b.get("name", "")), _id(b.get("id"))) for b in body.get("content") or ()
                  if isinstance(b, dict) and b.get("type") == "tool_use"]
    calls += [(str(o.get("name", "")), _id(o.get("call_id")))  # Responses
              for o in body.get("output") or ()
              if isinstance(o, dict) and o.get("type") == "function_call"]
    return calls


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _stream_calls(event: Any) -> list[tuple[str, str | None]]:
    if not isinstance(event, dict):
        return []
    calls: list[tuple[str, str | None]] = []
    for choice in event.get("choices") or ():
        for call in (_dict(_dict(choice).get("delta")).get("tool_calls") or ()):
            call = _dict(call)
            name = _dict(call.get("function")).get("name")
            if name:
                calls.append((str(name), _id(call.get("id"))))
    block = event.get("content_block")
    if isinstance(block, dict) and block.get("type") == "tool_use":
        calls.append((str(block.get("name", "")), _id(block.get("id"))))
    item = event.get("item")
    if isinstance(item, dict) and item.get("type") == "function_call":
        calls.append((str(item.get("name", "")), _id(item.get("call_id"))))
    return calls


class ToolCallCapture:
    """The names and ids of the tool calls a stream starts, as its events go by."""

    __slots__ = ("ids", "names")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.ids: list[str] = []

    def scan(self, blob: bytes) -> None:
        if any(m in blob for m in TOOL_MARKERS):
            for name, call_id in stream_calls(blob):
                if name not in self.names or call_id not in self.ids:
                    self.names.append(name)
                if call_id is not None and call_id not in self.ids:
                    self.ids.append(call_id)
