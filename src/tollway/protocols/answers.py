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
    if not any(m in out for m in TOOL_MARKERS):
        return []
    names = []
    for marker in TOOL_MARKERS:
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


class ToolCallCapture:
    """The names of the tool calls a stream starts, as its events go by."""

    __slots__ = ("names",)

    def __init__(self) -> None:
        self.names: list[str] = []

    def scan(self, blob: bytes) -> None:
        if any(m in blob for m in TOOL_MARKERS):
            self.names += stream_tool_names(blob)
