"""What a semantic lookup compares: the last user turn, within a partition of everything else.

Two requests may share an answer only if they are identical in all but the wording of their
last user turn: the partition digest covers the scope, the model after routing, the endpoint,
the stream flag, the system prompt, every earlier turn, the tools and every parameter. A
request whose last turn is not plain user text (a tool result, an image) has no semantic key.
"""

from __future__ import annotations

from typing import Any

from tollway.cache.exact import request_digest

SEMANTIC_ENDPOINTS = frozenset({"chat", "messages", "completions"})


def _text(content: Any) -> str | None:
    """Plain text of a message's content, or None if any part is not text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                return None
            text = part.get("text")
            if not isinstance(text, str):
                return None
            parts.append(text)
        return "\n".join(parts)
    return None


def split_last_turn(endpoint: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``(last user turn, the rest of the request)`` or None when there is no such turn."""
    if endpoint == "completions":
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return None
        return prompt, {k: v for k, v in body.items() if k != "prompt"}
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user" or set(last) - {
            "role", "content"}:
        return None
    text = _text(last.get("content"))
    if not text or not text.strip():
        return None
    return text, {**body, "messages": messages[:-1]}


def partition(scope: str, model: str, endpoint: str, rest: dict[str, Any], stream: bool,
              embedder: str) -> str:
    """``<scope>|<model>|<digest>``: readable ends so that a purge can find its partitions."""
    digest = request_digest(rest, endpoint, stream, embedder=embedder)
    return f"{scope}|{model}|{digest}"
