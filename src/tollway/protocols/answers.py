"""What a model's answer says, in any dialect: its text and the tools it called.

Whole answers are read from their parsed JSON; streams a group of whole SSE events at a
time, parsing only the events that can start a tool call (they carry one of the markers, and
a `"name"`: the events that only continue a call's arguments do not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tollway.protocols.sse import data_of, event_data

TOOL_MARKERS = (b'"tool_use"', b'"function"', b'"function_call"')
NAME_MARKER = b'"name"'  # in every event that starts a tool call, in every dialect


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call a model emitted: its name, its id (None when the dialect gives none) and
    its arguments as JSON text (in a stream, only what the starting event carried)."""

    name: str
    id: str | None
    arguments: str
    offset: int = 0  # in a stream: where the event that starts it begins, in those bytes


def stream_tool_calls(out: bytes) -> list[ToolCall]:
    """The tool calls that start in these SSE events (any dialect), with the offset of the
    event that starts each."""
    if NAME_MARKER not in out:
        return []
    found = []
    pos, n = 0, len(out)
    while pos < n:
        end = out.find(b"\n\n", pos)
        if end < 0:
            end = n
        event = out[pos:end]
        if NAME_MARKER in event and any(m in event for m in TOOL_MARKERS):
            try:
                data = orjson.loads(event_data(event)[1])
            except orjson.JSONDecodeError:
                data = None
            found += [ToolCall(name, cid, args, pos) for name, cid, args in _stream_calls(data)]
        pos = end + 2
    return found


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


def response_tool_calls(body: dict[str, Any]) -> list[ToolCall]:
    """The tool calls of a whole answer (any dialect)."""
    calls = []
    for choice in body.get("choices") or ():  # OpenAI chat
        for call in ((choice.get("message") or {}).get("tool_calls") or ()):
            fn = call.get("function") or {}
            calls.append(ToolCall(str(fn.get("name", "")), _str_or_none(call.get("id")),
                                  _json_text(fn.get("arguments", ""))))
    if body.get("type") == "message":  # Anthropic
        calls += [ToolCall(str(b.get("name", "")), _str_or_none(b.get("id")),
                           _json_text(b.get("input", {})))
                  for b in body.get("content") or ()
                  if isinstance(b, dict) and b.get("type") == "tool_use"]
    calls += [ToolCall(str(o.get("name", "")), _str_or_none(o.get("call_id") or o.get("id")),
                       _json_text(o.get("arguments", "")))
              for o in body.get("output") or ()  # Responses
              if isinstance(o, dict) and o.get("type") == "function_call"]
    return calls


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
    return [name for name, _, _ in _stream_calls(event)]


def _stream_calls(event: Any) -> list[tuple[str, str | None, str]]:
    """(name, id, arguments so far) of the calls one stream event starts."""
    if not isinstance(event, dict):
        return []
    calls = []
    for choice in event.get("choices") or ():
        for call in ((choice.get("delta") or {}).get("tool_calls") or ()):
            fn = call.get("function") or {}
            name = fn.get("name")
            if name:
                calls.append((str(name), _str_or_none(call.get("id")),
                              _json_text(fn.get("arguments", ""))))
    block = event.get("content_block")
    if isinstance(block, dict) and block.get("type") == "tool_use":
        calls.append((str(block.get("name", "")), _str_or_none(block.get("id")),
                      _json_text(block.get("input") or "")))
    item = event.get("item")
    if isinstance(item, dict) and item.get("type") == "function_call":
        calls.append((str(item.get("name", "")),
                      _str_or_none(item.get("call_id") or item.get("id")),
                      _json_text(item.get("arguments", ""))))
    return calls


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _json_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return ""


class ToolCallCapture:
    """The names of the tool calls a stream starts, as its events go by."""

    __slots__ = ("names",)

    def __init__(self) -> None:
        self.names: list[str] = []

    def scan(self, blob: bytes) -> None:
        if any(m in blob for m in TOOL_MARKERS):
            self.names += stream_tool_names(blob)
