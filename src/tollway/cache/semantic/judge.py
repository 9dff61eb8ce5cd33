"""Was the stored answer right for this request? Asked of the fresh answer, when one was
fetched anyway (an exploration): the verdicts are what the cache learns its thresholds from.

Three judges (`cache.semantic.judge.kind`):
- `exact`: the two answers' texts are equal once normalised (case, spacing, trailing
  punctuation; JSON compared canonically). Right for deterministic and structured answers,
  which is what the semantic cache stores by default (`when: deterministic`); it errs
  towards "wrong", which only makes the cache more careful.
- `embedding`: the answers' texts embed (raw text) at or above `judge.threshold`.
- `model`: a cheap model under `models:` (OpenAI-compatible) is asked whether the two
  answers agree; its spend is recorded as the gateway's own.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from tollway.protocols.answers import response_text
from tollway.protocols.sse import event_data, events

_SPACE = re.compile(r"\s+")


def answer_text(body: bytes, content_type: str) -> str | None:
    """The text of a whole answer or of an SSE stream, in any dialect; None if unreadable."""
    if "event-stream" not in content_type:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        return response_text(parsed) if isinstance(parsed, dict) else None
    parts: list[str] = []
    for ev in events(body):
        try:
            data = orjson.loads(event_data(ev)[1])
        except orjson.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        for choice in data.get("choices") or ():  # OpenAI chat
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                parts.append(delta["content"])
        delta = data.get("delta")
        if data.get("type") == "content_block_delta" and isinstance(delta, dict) and (
                delta.get("type") == "text_delta"):  # Anthropic
            parts.append(str(delta.get("text", "")))
        elif data.get("type") == "response.output_text.delta" and isinstance(delta, str):
            parts.append(delta)  # Responses
    return "".join(parts)


def normalise(text: str) -> str:
    """What `exact` compares: canonical JSON when the text is JSON, else the words."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return orjson.dumps(orjson.loads(stripped), option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONDecodeError:
            pass
    return _SPACE.sub(" ", stripped.lower()).rstrip(" .!?")


def exact(cached: str, fresh: str) -> bool:
    return normalise(cached) == normalise(fresh)


JUDGE_PROMPT = (
    "Two answers were given to the same request. Reply with one word: YES if they say the "
    "same thing (the second could be served in place of the first), NO otherwise.\n\n"
    "Request:\n{q}\n\nFirst answer:\n{a}\n\nSecond answer:\n{b}")


def judge_payload(model: str, question: str, cached: str, fresh: str) -> dict[str, Any]:
    return {"model": model, "temperature": 0, "max_tokens": 3, "messages": [
        {"role": "user", "content": JUDGE_PROMPT.format(q=question[:4000], a=cached[:4000],
                                                        b=fresh[:4000])}]}


def judge_reply(body: dict[str, Any]) -> bool | None:
    """The judge model's verdict: True, False, or None when it said neither."""
    word = response_text(body).strip().upper()
    if word.startswith("YES"):
        return True
    if word.startswith("NO"):
        return False
    return None
