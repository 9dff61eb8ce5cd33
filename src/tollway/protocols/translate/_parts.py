"""Chat content as the items of dialects that take text and images as a list of parts, and
turns of one role joined: what the Gemini and Converse request translators share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tollway.protocols.translate.errors import TranslationError


def push_turn(turns: list[dict[str, Any]], role: str, items: list[dict[str, Any]],
              key: str) -> None:
    """Append a turn; a turn of the same role as the last joins it (Gemini and Converse want
    roles to alternate, and a turn's tool results to arrive together)."""
    if not items:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key] += items
    else:
        turns.append({"role": role, key: items})


def content_parts(content: Any, at: str, dialect: str, text_only: bool,
                  image: Callable[[Any, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """A chat message's content as `{"text": ...}` items and `image(image_url, where)`
    items; anything else is a TranslationError naming where it is."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{at}.content must be a string or an array", f"{at}.content")
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{at}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            out.append({"text": part["text"]})
        elif kind == "image_url" and not text_only:
            out.append(image(part.get("image_url"), where))
        else:
            raise TranslationError(f"{where} ({kind!r}) cannot be sent to {dialect} here",
                                   where)
    return out
