"""Tables and small helpers shared by the request, response and stream translators."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson

from tollway.protocols.inputs import too_deep

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason``.
STOP_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: OpenAI ``finish_reason`` -> Anthropic ``stop_reason``.
FINISH_TO_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_BAD_ID = re.compile(r"[^a-zA-Z0-9_-]")


def dumps(value: Any) -> bytes:
    """Compact JSON, the way both services send it."""
    return orjson.dumps(value)


def new_id(prefix: str) -> str:
    """A fresh id for objects the upstream did not name (Anthropic-style 24 hex chars)."""
    return prefix + uuid.uuid4().hex[:24]


def tool_id(raw: Any) -> str:
    """A tool-call id Anthropic accepts (``^[a-zA-Z0-9_-]+$``); other providers' ids may not.

    The same rewrite applies to tool_use and tool_result ids, so pairs keep matching.
    """
    if not isinstance(raw, str) or not raw:
        return new_id("toolu_")
    return _BAD_ID.sub("_", raw) if _BAD_ID.search(raw) else raw


def parse_arguments(raw: Any) -> dict[str, Any]:
    """OpenAI's JSON-string arguments as the object Anthropic wants; keeps bad JSON visible."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"_raw": raw}
    # Nested deeper than the request body may be (the body's check cannot see inside a
    # string), it could not be written out again: pass it on as the string it was.
    if not isinstance(value, dict) or too_deep(value):
        return {"_raw": raw}
    return value


def chat_usage(u: Any) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage: OpenAI's prompt count includes cached tokens."""
    if not isinstance(u, dict):
        u = {}
    cache_read = _int(u.get("cache_read_input_tokens"))
    prompt = _int(u.get("input_tokens")) + cache_read + _int(u.get("cache_creation_input_tokens"))
    completion = _int(u.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def messages_usage(u: Any) -> dict[str, int]:
    """OpenAI usage -> Anthropic usage: Anthropic's input count excludes cache reads."""
    if not isinstance(u, dict):
        u = {}
    details = u.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return {
        "input_tokens": max(0, _int(u.get("prompt_tokens")) - cached),
        "output_tokens": _int(u.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


count = _int  # a token count from an upstream's usage: an int, else 0


class ChatChunks:
    """What an upstream's stream becomes: chat.completion.chunk events of one completion."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "chatcmpl-" + new_id("")
        self.created = int(time.time())

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}])

    def _chunk(self, choices: list[dict[str, Any]], use: Any = None) -> bytes:
        payload: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk",
                                   "created": self.created, "model": self.model,
                                   "choices": choices}
        if use is not None:
            payload["usage"] = use
        return b"data: " + orjson.dumps(payload) + b"\n\n"


def strip_prefix(value: Any, prefix: str) -> str:
    """An upstream id without its dialect prefix, to re-prefix it in the other dialect."""
    if not isinstance(value, str) or not value:
        return uuid.uuid4().hex[:24]
    return value[len(prefix):] if value.startswith(prefix) else value
