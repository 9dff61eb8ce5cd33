"""Loop evidence read from the conversation itself.

An agent retrying the same failing tool call leaves the evidence in the history it resends:
the same tool, with the same arguments, answered with the same result, again and again. No
state is needed to see it. A tool called with other arguments, or answering differently
(a job whose status changes), is progress and does not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class RepeatedCall:
    tool: str
    arguments: str
    result: str
    times: int

    def evidence(self) -> str:
        args = self.arguments if len(self.arguments) <= 120 else self.arguments[:117] + "..."
        res = self.result if len(self.result) <= 80 else self.result[:77] + "..."
        return (f"tool {self.tool!r} was called {self.times} times with arguments {args} "
                f"and returned the same result each time ({res!r})")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts
        return "".join(_part_text(p) for p in value)
    return _sorted_json(value)


def _part_text(part: Any) -> str:
    text = part.get("text", "") if isinstance(part, dict) else part
    return text if isinstance(text, str) else _sorted_json(text)


def _canonical_args(args: Any) -> str:
    if isinstance(args, str):
        try:
            parsed = orjson.loads(args)
        except orjson.JSONDecodeError:
            return args
        return _sorted_json(parsed, args)
    return _sorted_json(args)


def _sorted_json(value: Any, otherwise: str = "") -> str:
    """Canonical JSON of a value; `otherwise` for one orjson cannot write (an arguments
    string nested past its limit: the body's own depth check does not see inside it)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        return otherwise


def tool_calls(endpoint: str, body: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(tool, canonical arguments, result) for every answered tool call, in order."""
    calls: dict[str, tuple[str, str]] = {}
    out: list[tuple[str, str, str]] = []
    if endpoint == "chat":
        for m in _list(body.get("messages")):
            if not isinstance(m, dict):
                continue
            if m.get("role") == "assistant":
                for c in _list(m.get("tool_calls")):
                    fn = c.get("function") if isinstance(c, dict) else None
                    if isinstance(fn, dict):
                        calls[_id(c.get("id")) or ""] = (str(fn.get("name", "")),
                                                   _canonical_args(fn.get("arguments", "")))
            elif m.get("role") == "tool" and _id(m.get("tool_call_id")) in calls:
                name, args = calls[m["tool_call_id"]]
                out.append((name, args, _text(m.get("content"))))
    elif endpoint == "messages":
        for m in _list(body.get("messages")):
            if not isinstance(m, dict) or not isinstance(m.get("content"), list):
                continue
            for block in m["content"]:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    calls[_id(block.get("id")) or ""] = (str(block.get("name", "")),
                                                   _canonical_args(block.get("input", {})))
                elif (block.get("type") == "tool_result"
                      and _id(block.get("tool_use_id")) in calls):
                    name, args = calls[block["tool_use_id"]]
                    out.append((name, args, _text(block.get("content"))))
    elif endpoint == "responses" and isinstance(body.get("input"), list):
        for item in body["input"]:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "function_call":
                calls[_id(item.get("call_id")) or ""] = (str(item.get("name", "")),
                                                   _canonical_args(item.get("arguments", "")))
            elif (item.get("type") == "function_call_output"
                  and _id(item.get("call_id")) in calls):
                name, args = calls[item["call_id"]]
                out.append((name, args, _text(item.get("output"))))
    return out


def _id(value: Any) -> str | None:
    """A call's id as a key: "" for none; an answer's id that is not a string matches no
    call (the None key is never stored)."""
    return value if isinstance(value, str) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def repeated_call(endpoint: str, body: dict[str, Any], threshold: int) -> RepeatedCall | None:
    """The most repeated identical (tool, arguments, result), if it reached the threshold."""
    counts: dict[tuple[str, str, str], int] = {}
    worst: tuple[str, str, str] | None = None
    for call in tool_calls(endpoint, body):
        n = counts[call] = counts.get(call, 0) + 1
        if worst is None or n > counts[worst]:
            worst = call
    if worst is None or counts[worst] < threshold:
        return None
    return RepeatedCall(worst[0], worst[1], worst[2], counts[worst])
