"""What a request's conversation says about the run it belongs to, in any dialect.

An agent resends its history on every step, so a request carries its run's last answer (the
assistant turn the gateway returned) and, after it, what is new (the user's next message,
the tool results). The last answer identifies the run it continues: its tool-call ids
(unique, echoed back in the history) or, for a text answer, a digest of its text. The new
content may carry what another session said (a hand-off): its fingerprints say so. A request
with no assistant turn is an opening; its digest tells a re-sent opening from a new one.

Fingerprints hold no text: 8-byte digests of normalised sentences (lines, or slices of long
lines) of at least `MIN_CHARS`, so a sentence quoted or wrapped ("Please verify: ...") still
matches, and nothing of the conversation is kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

MIN_CHARS = 24  # a sentence shorter than this is too common to say where it came from
MAX_FINGERPRINTS = 32
_SLICE = 160  # long sentences (JSON, code) are fingerprinted in slices of this many chars
_BREAKS = (". ", "! ", "? ", ": ", "; ")  # "Please verify: <answer>" splits too
_TRIM = " \t\"'`>*_-#:;,.!?()[]{}"


@dataclass(slots=True)
class Conversation:
    last_answer: list[str] = field(default_factory=list)  # keys of the last assistant turn
    new_text: list[str] = field(default_factory=list)  # what came after it
    opening: bytes | None = None  # the request, canonical, when it has no assistant turn
    previous_response: str | None = None  # Responses: the response this one continues


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def text_key(text: str) -> str | None:
    """The key of an answer's text, as its client will send it back (SDKs echo it as it
    came; some frameworks trim it); None when empty."""
    norm = text.strip()
    return "t" + digest(norm.encode("utf-8", "surrogatepass")) if norm else None


def call_key(call_id: str) -> str:
    return "c" + call_id[:96]


def fingerprints(texts: list[str]) -> list[str]:
    """Digests of the normalised sentences of these texts (at most MAX_FINGERPRINTS).
    Sentences end at a line break or at '. ', '! ', '? ', ': ', '; ' (so "Please verify:
    <answer>" splits off the answer); split with str methods, not a regex, which costs
    several times as much on every request."""
    out: dict[str, None] = {}
    for text in texts:
        for line in text.lower().splitlines():
            for brk in _BREAKS:
                if brk in line:
                    line = line.replace(brk, "\n")
            for sentence in line.split("\n"):
                if len(sentence) < MIN_CHARS:
                    continue
                if "  " in sentence or "\t" in sentence:
                    sentence = " ".join(sentence.split())
                norm = sentence.strip(_TRIM)
                for i in range(0, len(norm), _SLICE):
                    piece = norm[i:i + _SLICE]
                    if len(piece) >= MIN_CHARS:
                        out["f" + digest(piece.encode("utf-8", "surrogatepass"))] = None
                        if len(out) >= MAX_FINGERPRINTS:
                            return list(out)
    return list(out)


def tool_keys(name: str, args: Any) -> list[str]:
    """Keys a tool call is found by when the agent then makes it through the tool gateway:
    its name and arguments, and its arguments alone (a tool is often named differently to
    the model than to the gateway; of two answers of one agent that emitted the same
    arguments, the later is found). Arguments are an object (or its JSON text); top-level
    scalars compare as text, so a model's `{"days": 3}` is the query string `?days=3`."""
    if isinstance(args, (str, bytes)):
        try:
            args = orjson.loads(args)
        except orjson.JSONDecodeError:
            return []
    if not isinstance(args, dict) or not args:
        return []
    canon = "\n".join(f"{k}={_scalar(args[k])}" for k in sorted(args)).encode(
        "utf-8", "surrogatepass")
    return ["k" + digest(name.encode("utf-8", "surrogatepass") + b"\0" + canon),
            "k" + digest(b"\0" + canon)]


def argument_texts(args: Any) -> list[str]:
    """The strings in a tool call's arguments (its JSON text): a sub-agent's task, a message
    to another agent. What a hand-off through a tool call is recognised by."""
    if isinstance(args, (str, bytes)):
        try:
            args = orjson.loads(args)
        except orjson.JSONDecodeError:
            # a stream cut mid-call: its text as it is
            return [args] if isinstance(args, str) and len(args) >= MIN_CHARS else []
    out: list[str] = []
    stack = [args]
    while stack and len(out) < MAX_FINGERPRINTS:
        v = stack.pop()
        if isinstance(v, str):
            if len(v) >= MIN_CHARS:
                out.append(v)
        elif isinstance(v, dict):
            stack += reversed(list(v.values()))
        elif isinstance(v, list):
            stack += reversed(v)
    return out


def _scalar(v: Any) -> str:
    if isinstance(v, str):
        return v
    try:
        return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return repr(v)


def read(endpoint: str, body: dict[str, Any]) -> Conversation:
    if endpoint == "chat":
        return _chat(body.get("messages"))
    if endpoint == "messages":
        return _messages(body.get("messages"), body.get("system"))
    if endpoint == "responses":
        return _responses(body)
    if endpoint == "completions":
        return Conversation(opening=_canonical(body.get("prompt")))
    return Conversation()


def _texts(value: Any) -> list[str]:
    """The text of a content value: a string, or a list of parts with text."""
    if isinstance(value, str):
        return [value]
    out: list[str] = []
    if isinstance(value, list):
        for part in value:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif part.get("type") == "tool_result":
                    out += _texts(part.get("content"))
            elif isinstance(part, str):
                out.append(part)
    return out


def _canonical(value: Any) -> bytes | None:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return None


def _keys(texts: list[str], call_ids: list[str]) -> list[str]:
    keys = [call_key(c) for c in call_ids]
    tk = text_key("".join(texts))
    if tk is not None:
        keys.append(tk)
    return keys


def _assistant(m: Any) -> bool:
    return isinstance(m, dict) and m.get("role") == "assistant"


def _responses_turn(it: Any) -> bool:
    return isinstance(it, dict) and (it.get("type") == "function_call"
                                     or it.get("role") == "assistant")


def _last(items: list[Any], is_turn: Any) -> int | None:
    """The index of the last assistant turn (the answer the request continues), if any."""
    for i in range(len(items) - 1, -1, -1):
        if is_turn(items[i]):
            return i
    return None


def _chat(messages: Any) -> Conversation:
    if not isinstance(messages, list):
        return Conversation()
    last = _last(messages, _assistant)
    if last is None:  # an opening: all of it is new
        return Conversation(opening=_canonical(messages), new_text=[
            t for n in messages if isinstance(n, dict) and n.get("role") != "system"
            for t in _texts(n.get("content"))])
    m = messages[last]
    calls = [c.get("id") for c in m.get("tool_calls") or () if isinstance(c, dict)]
    new = [t for n in messages[last + 1:] if isinstance(n, dict) for t in _texts(n.get("content"))]
    return Conversation(_keys(_texts(m.get("content")), [c for c in calls if isinstance(c, str)]),
                        new)


def _messages(messages: Any, system: Any) -> Conversation:
    if not isinstance(messages, list):
        return Conversation()
    last = _last(messages, _assistant)
    if last is None:  # an opening: all of it is new
        return Conversation(opening=_canonical([system, messages]), new_text=[
            t for n in messages if isinstance(n, dict) for t in _texts(n.get("content"))])
    content = messages[last].get("content")
    blocks = content if isinstance(content, list) else []
    calls = [b.get("id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
    texts = [content] if isinstance(content, str) else [
        b["text"] for b in blocks if isinstance(b, dict) and b.get("type") == "text"
        and isinstance(b.get("text"), str)]
    new = [t for n in messages[last + 1:] if isinstance(n, dict) for t in _texts(n.get("content"))]
    return Conversation(_keys(texts, [c for c in calls if isinstance(c, str)]), new)


def _responses(body: dict[str, Any]) -> Conversation:
    prev = body.get("previous_response_id")
    prev = prev if isinstance(prev, str) else None
    items = body.get("input")
    if isinstance(items, str):
        return Conversation(new_text=[items], previous_response=prev,
                            opening=None if prev else _canonical([body.get("instructions"),
                                                                  items]))
    if not isinstance(items, list):
        return Conversation(previous_response=prev)
    last = _last(items, _responses_turn)  # an assistant message or a function call
    if last is None:
        conv = Conversation(opening=None if prev else _canonical([body.get("instructions"),
                                                                  items]))
        conv.previous_response = prev
        conv.new_text = [t for it in items if isinstance(it, dict)
                         for t in _texts(it.get("content") or it.get("output"))]
        return conv
    start = last
    while start > 0 and _responses_turn(items[start - 1]):
        start -= 1
    turn = items[start:last + 1]
    calls = [it.get("call_id") for it in turn if it.get("type") == "function_call"]
    texts = [t for it in turn if it.get("role") == "assistant" for t in _texts(it.get("content"))]
    new = [t for it in items[last + 1:] if isinstance(it, dict)
           for t in _texts(it.get("content") or it.get("output"))]
    conv = Conversation(_keys(texts, [c for c in calls if isinstance(c, str)]), new)
    conv.previous_response = prev
    return conv
