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
    return list(dict.fromkeys(name for name, _ in stream_calls(out)))


def stream_calls(out: bytes) -> list[tuple[str, str | None]]:
    """(name, call id) of the tool calls that start in these SSE events (any dialect)."""
    if not any(m in out for m in TOOL_MARKERS):
        return []
    calls: list[tuple[str, str | None]] = []
    for marker in TOOL_MARKERS:
        if marker in out:
            for event in data_of(out, marker):
                calls += [(name, cid) for name, cid, _ in _stream_calls(event)]
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


def response_tool_calls(body: dict[str, Any]) -> list[ToolCall]:
    """The tool calls of a whole answer (any dialect); what is not the shape a dialect
    documents is skipped, never an error."""
    calls = []
    for choice in body.get("choices") or ():  # OpenAI chat
        for call in (_dict(_dict(choice).get("message")).get("tool_calls") or ()):
            call = _dict(call)
            fn = _dict(call.get("function"))
            calls.append(ToolCall(str(fn.get("name", "")), _id(call.get("id")),
                                  _json_text(fn.get("arguments", ""))))
    if body.get("type") == "message":  # Anthropic
        calls += [ToolCall(str(b.get("name", "")), _id(b.get("id")),
                           _json_text(b.get("input", {})))
                  for b in body.get("content") or ()
                  if isinstance(b, dict) and b.get("type") == "tool_use"]
    calls += [ToolCall(str(o.get("name", "")), _id(o.get("call_id") or o.get("id")),
                       _json_text(o.get("arguments", "")))
              for o in body.get("output") or ()  # Responses
              if isinstance(o, dict) and o.get("type") == "function_call"]
    return calls


def response_tool_names(body: dict[str, Any]) -> list[str]:
    return [c.name for c in response_tool_calls(body)]


def response_calls(body: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(name, call id) of the tool calls a whole answer makes, in any dialect."""
    return [(c.name, c.id) for c in response_tool_calls(body)]


def _stream_calls(event: Any) -> list[tuple[str, str | None, str]]:
    """(name, id, arguments so far) of the calls one stream event starts."""
    if not isinstance(event, dict):
        return []
    calls = []
    for choice in event.get("choices") or ():
        for call in (_dict(_dict(choice).get("delta")).get("tool_calls") or ()):
            call = _dict(call)
            fn = _dict(call.get("function"))
            name = fn.get("name")
            if name:
                calls.append((str(name), _id(call.get("id")),
                              _json_text(fn.get("arguments", ""))))
    block = event.get("content_block")
    if isinstance(block, dict) and block.get("type") == "tool_use":
        calls.append((str(block.get("name", "")), _id(block.get("id")),
                      _json_text(block.get("input") or "")))
    item = event.get("item")
    if isinstance(item, dict) and item.get("type") == "function_call":
        calls.append((str(item.get("name", "")), _id(item.get("call_id") or item.get("id")),
                      _json_text(item.get("arguments", ""))))
    return calls


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _json_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return ""


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
