"""What a model's answer says, in any dialect: its text and the tools it called.

Whole answers are read from their parsed JSON; streams a group of whole SSE events at a
time, parsing only the events that can start a tool call (they carry one of the markers, and
a `"name"`: the events that only continue a call's arguments do not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tollway.protocols.sse import event_data, events

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
    return list(dict.fromkeys(c.name for c in stream_tool_calls(out)))


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
    """The tool calls a stream makes, as its events go by: names and ids as soon as a call
    starts, and its arguments as they arrive (OpenAI chat deltas by index, Anthropic
    input_json_delta by block, a Responses item's arguments when it is done). Only events
    with a marker are parsed, once each."""

    __slots__ = ("_calls", "ids", "names")

    MARKERS = (*TOOL_MARKERS, b'"input_json_delta"')

    def __init__(self) -> None:
        self.names: list[str] = []
        self.ids: list[str] = []
        self._calls: dict[Any, list[Any]] = {}  # stream position -> [name, id, [args]]

    def scan(self, blob: bytes) -> None:
        if not any(m in blob for m in self.MARKERS):
            return
        for ev in events(blob):
            if any(m in ev for m in self.MARKERS):
                try:
                    data = orjson.loads(event_data(ev)[1])
                except orjson.JSONDecodeError:
                    continue
                if isinstance(data, dict):
                    self._event(data)

    def arguments(self) -> list[tuple[str, str]]:
        """(name, arguments as JSON text) of each call, as far as the stream went."""
        return [(c[0], "".join(c[2])) for c in self._calls.values() if c[0]]

    def _event(self, event: dict[str, Any]) -> None:
        for choice in event.get("choices") or ():  # OpenAI chat
            choice = _dict(choice)
            for call in (_dict(choice.get("delta")).get("tool_calls") or ()):
                call = _dict(call)
                fn = _dict(call.get("function"))
                entry = self._at(("o", choice.get("index"), call.get("index")),
                                 fn.get("name"), call.get("id"))
                if isinstance(fn.get("arguments"), str):
                    entry[2].append(fn["arguments"])
        kind = event.get("type")
        block = event.get("content_block")
        if isinstance(block, dict) and block.get("type") == "tool_use":  # Anthropic
            entry = self._at(("a", event.get("index")), block.get("name"), block.get("id"))
            if block.get("input"):
                entry[2][:] = [_json_text(block["input"])]
        elif kind == "content_block_delta":
            delta = _dict(event.get("delta"))
            entry = self._calls.get(("a", event.get("index")))
            if entry is not None and isinstance(delta.get("partial_json"), str):
                entry[2].append(delta["partial_json"])
        item = event.get("item")
        if isinstance(item, dict) and item.get("type") == "function_call":  # Responses
            entry = self._at(("r", item.get("id") or item.get("call_id")), item.get("name"),
                             item.get("call_id"))
            if isinstance(item.get("arguments"), str) and item["arguments"]:
                entry[2][:] = [item["arguments"]]

    def _at(self, where: Any, name: Any, call_id: Any) -> list[Any]:
        entry = self._calls.get(where)
        if entry is None:
            entry = self._calls[where] = [None, None, []]
        if isinstance(name, str) and name and entry[0] is None:
            entry[0] = name
            self.names.append(name)
        if (cid := _id(call_id)) is not None and entry[1] is None:
            entry[1] = cid
            if cid not in self.ids:
                self.ids.append(cid)
        return entry
