"""Non-streamed answers: an Anthropic message as a chat.completion, and the reverse.

``model`` is the name the client asked for: the client must see its own model name back,
not the upstream id the gateway routed to.
"""

from __future__ import annotations

import time
from typing import Any

from tollway.protocols.translate._common import (
    FINISH_TO_STOP,
    STOP_TO_FINISH,
    chat_usage,
    dumps,
    messages_usage,
    new_id,
    parse_arguments,
    strip_prefix,
    tool_id,
)


def messages_response_to_chat(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic ``message`` as an OpenAI ``chat.completion`` (thinking blocks dropped)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in resp.get("content") or ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id") or new_id("call_"), "type": "function",
                          "function": {"name": block.get("name") or "",
                                       "arguments": dumps(block.get("input") or {}).decode()}})
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else (None if calls else ""),
        "refusal": None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = calls
    stop = resp.get("stop_reason")
    finish = STOP_TO_FINISH.get(stop, "stop") if isinstance(stop, str) else "stop"
    return {
        "id": "chatcmpl-" + strip_prefix(resp.get("id"), "chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": chat_usage(resp.get("usage")),
    }


def chat_response_to_messages(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` (first choice) as an Anthropic ``message``."""
    choices = resp.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    msg = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(msg, dict):
        msg = {}
    blocks: list[dict[str, Any]] = []
    text = msg.get("content")
    if isinstance(text, list):  # some compatible servers answer with parts
        text = "".join(p.get("text") or "" for p in text if isinstance(p, dict))
    if isinstance(text, str) and text:
        blocks.append({"type": "text", "text": text})
    refusal = msg.get("refusal")
    if isinstance(refusal, str) and refusal:
        blocks.append({"type": "text", "text": refusal})
    calls = msg.get("tool_calls")
    if not calls and isinstance(msg.get("function_call"), dict):
        calls = [{"function": msg["function_call"]}]
    for call in calls or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        blocks.append({"type": "tool_use", "id": tool_id(call.get("id")),
                       "name": fn.get("name") or "", "input": parse_arguments(fn.get("arguments"))})
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    stop = FINISH_TO_STOP.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    if stop == "end_turn":
        # Some servers say "stop" when they called tools, and refusals come as "stop" too.
        if any(b["type"] == "tool_use" for b in blocks):
            stop = "tool_use"
        elif isinstance(refusal, str) and refusal:
            stop = "refusal"
    return {
        "id": "msg_" + strip_prefix(resp.get("id"), "chatcmpl-"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": messages_usage(resp.get("usage")),
    }
