"""Loop evidence read from the conversation itself.

An agent retrying the same failing tool call leaves the evidence in the history it resends,
so no state is needed to see it:
- `repeated_tool_call`: the same tool, with the same arguments, answered with the same
  result, again and again. Other arguments, or another result, do not count.
- `no_progress`: the same tool answering the same result (ids, times and counters
  normalised away: tollway.loops.results) in a row, whatever the arguments: a retry storm
  that changes its arguments every time. Only the run at the end of each tool's history
  counts, and only for a tool answered in the newest turn: any other result ends the run (a
  job whose status moves, a search that finds something), and a run the agent already moved
  on from is not reported again on every later request. Bare acknowledgements ("ok") end a
  run too: an agent writing twenty files is working.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from tollway.loops.results import ResultPrint, acknowledges, fingerprint, sketch


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


@dataclass(frozen=True, slots=True)
class NoProgress:
    tool: str
    times: int
    result: str  # normalised, truncated

    def evidence(self) -> str:
        return (f"tool {self.tool!r} answered the same result the last {self.times} times, "
                f"whatever its arguments ({self.result!r}, ids and times normalised)")


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


@dataclass(frozen=True, slots=True)
class Answered:
    """One tool call of the conversation and its result. `turn` numbers the model turns that
    emitted calls (parallel calls share one); `error`: the result says it is one
    (Anthropic's is_error)."""

    turn: int
    tool: str
    arguments: Any
    result: Any
    error: bool = False


def answered(endpoint: str, body: dict[str, Any]) -> list[Answered]:
    """Every answered tool call of the conversation the agent sent, in order of the results."""
    calls: dict[str, tuple[int, str, Any]] = {}
    out: list[Answered] = []
    turn = 0
    if endpoint == "chat":
        for m in _list(body.get("messages")):
            if not isinstance(m, dict):
                continue
            if m.get("role") == "assistant":
                if _list(m.get("tool_calls")):
                    turn += 1
                for c in _list(m.get("tool_calls")):
                    fn = c.get("function") if isinstance(c, dict) else None
                    if isinstance(fn, dict):
                        calls[_id(c.get("id")) or ""] = (turn, str(fn.get("name", "")),
                                                         fn.get("arguments", ""))
            elif m.get("role") == "tool" and _id(m.get("tool_call_id")) in calls:
                t, name, args = calls[m["tool_call_id"]]
                out.append(Answered(t, name, args, m.get("content")))
    elif endpoint == "messages":
        for m in _list(body.get("messages")):
            if not isinstance(m, dict) or not isinstance(m.get("content"), list):
                continue
            if m.get("role") == "assistant":
                turn += 1
            for block in m["content"]:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    calls[_id(block.get("id")) or ""] = (turn, str(block.get("name", "")),
                                                         block.get("input", {}))
                elif (block.get("type") == "tool_result"
                      and _id(block.get("tool_use_id")) in calls):
                    t, name, args = calls[block["tool_use_id"]]
                    out.append(Answered(t, name, args, block.get("content"),
                                        block.get("is_error") is True))
    elif endpoint == "responses" and isinstance(body.get("input"), list):
        in_turn = False  # consecutive function_call items: one turn's parallel calls
        for item in body["input"]:
            if not isinstance(item, dict):
                continue
            is_call = item.get("type") == "function_call"
            if is_call and not in_turn:
                turn += 1
            in_turn = is_call
            if is_call:
                calls[_id(item.get("call_id")) or ""] = (turn, str(item.get("name", "")),
                                                         item.get("arguments", ""))
            elif (item.get("type") == "function_call_output"
                  and _id(item.get("call_id")) in calls):
                t, name, args = calls[item["call_id"]]
                out.append(Answered(t, name, args, item.get("output")))
    return out


def _id(value: Any) -> str | None:
    """A call's id as a key: "" for none; an answer's id that is not a string matches no
    call (the None key is never stored)."""
    return value if isinstance(value, str) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def repeated_call(found: list[Answered], threshold: int) -> RepeatedCall | None:
    """The most repeated identical (tool, arguments, result) among the conversation's
    answered calls (`answered()`), if it reached the threshold. Only a tool answered at
    least `threshold` times can repeat, so only its calls are canonicalised."""
    per_tool: dict[str, int] = {}
    for a in found:
        per_tool[a.tool] = per_tool.get(a.tool, 0) + 1
    counts: dict[tuple[str, str, str], int] = {}
    worst: tuple[str, str, str] | None = None
    for a in found:
        if per_tool[a.tool] < threshold:
            continue
        call = (a.tool, _canonical_args(a.arguments), _text(a.result))
        n = counts[call] = counts.get(call, 0) + 1
        if worst is None or n > counts[worst]:
            worst = call
    if worst is None or counts[worst] < threshold:
        return None
    return RepeatedCall(worst[0], worst[1], worst[2], counts[worst])


def no_progress(found: list[Answered], threshold: int) -> NoProgress | None:
    """A run of one normalised result at the end of the history of a tool answered in the
    newest turn (among `answered()`), if it reached the threshold (counted up to the
    threshold). Walked newest first and only until the run ends: told apart by their plain
    words first, results are normalised only when they may be the same, so an agent making
    progress costs little."""
    if len(found) < threshold:
        return None
    newest = found[-1].turn
    for tool in {a.tool for a in found if a.turn == newest}:
        run = _run(reversed([a for a in found if a.tool == tool]), threshold)
        if run is not None:
            return NoProgress(tool, threshold, run.excerpt)
    return None


def _run(results: Iterator[Answered], threshold: int) -> ResultPrint | None:
    """The newest result, if the `threshold` newest are all the same (and not a bare
    acknowledgement). Normalised only once two sketches agree."""
    first = next(results)
    text = _text(first.result)
    if acknowledges(text, first.error):
        return None
    mark = sketch(text)
    fp: ResultPrint | None = None
    n = 1
    for a in results:
        if n >= threshold:
            break
        other = _text(a.result)
        if other != text:
            if sketch(other) != mark:
                return None
            fp = fp or fingerprint(text, first.error)
            if fingerprint(other, a.error).digest != fp.digest:
                return None
        n += 1
    if n < threshold:
        return None
    return fp or fingerprint(text, first.error)
