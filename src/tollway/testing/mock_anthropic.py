"""Anthropic dialect of the mock provider: Messages (streamed or not) and count_tokens.

Event names, block shapes and error bodies match the public Messages API so the official
``anthropic`` SDK, and the gateway's translation code, see what the real service sends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from tollway.testing.mock_common import (
    JSON_TYPE,
    MOCK_MODELS,
    Handler,
    Turn,
    mock_token_count,
    split_chars,
    split_pieces,
)

__all__ = ["ROUTES", "anthropic_usage", "error_response"]

_ERROR_KINDS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_response(
    status: int,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    kind: str | None = None,
    **_: Any,
) -> web.Response:
    """An error in Anthropic's ``{"type": "error", "error": {type, message}}`` shape."""
    kind = kind or _ERROR_KINDS.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if headers and "request-id" in headers:
        payload["request_id"] = headers["request-id"]
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type=JSON_TYPE, headers=headers
    )


def anthropic_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """Usage with the cache counters the Messages API always reports."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _sse(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _block_tokens(block: Any) -> int:
    """Words in one content block: text, tool_use input JSON, or tool_result content."""
    if not isinstance(block, dict):
        return 0
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return mock_token_count(text) if isinstance(text, str) else 0
    if kind == "tool_use":
        return mock_token_count(orjson.dumps(block.get("input", {})).decode())
    if kind == "tool_result":
        return _content_tokens(block.get("content"))
    return 0


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return mock_token_count(content)
    if isinstance(content, list):
        return sum(_block_tokens(b) for b in content)
    return 0


def input_tokens(body: dict[str, Any]) -> int:
    """System words + per message (content words + 3): the mock's deterministic prompt size."""
    total = _content_tokens(body.get("system"))
    for msg in body.get("messages") or ():
        if isinstance(msg, dict):
            total += 3 + _content_tokens(msg.get("content"))
    return total


def _user_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def _validate(turn: Turn, *, need_max_tokens: bool) -> web.Response | None:
    body = turn.body
    for field, ok in (
        ("model", isinstance(body.get("model"), str)),
        ("messages", isinstance(body.get("messages"), list)),
        (
            "max_tokens",
            not need_max_tokens
            or (
                isinstance(body.get("max_tokens"), int)
                and not isinstance(body.get("max_tokens"), bool)
            ),
        ),
    ):
        if not ok:
            return error_response(400, f"{field}: Field required", headers=turn.extra_headers())
    return None


def _tool_name(body: dict[str, Any], messages: list[Any]) -> str | None:
    """The tool to call, or None when the mock should answer with text."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools or not isinstance(tools, list):
        return None
    if isinstance(choice, dict) and choice.get("type") == "none":
        return None
    last = messages[-1] if messages else None
    if (
        isinstance(last, dict)
        and last.get("role") == "user"
        and isinstance(last.get("content"), list)
    ):
        if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last["content"]):
            return None
    if (
        isinstance(choice, dict)
        and choice.get("type") == "tool"
        and isinstance(choice.get("name"), str)
    ):
        return str(choice["name"])
    first = tools[0]
    return str(first["name"]) if isinstance(first, dict) and "name" in first else "tool"


async def messages(turn: Turn) -> web.StreamResponse:
    """``POST /v1/messages``: a text block or one tool_use block, streamed or not."""
    invalid = _validate(turn, need_max_tokens=True)
    if invalid is not None:
        return invalid
    body = turn.body
    msgs: list[Any] = body["messages"]
    prompt = input_tokens(body)
    user_text = ""
    for msg in reversed(msgs):
        if isinstance(msg, dict) and msg.get("role") == "user":
            user_text = _user_text(msg.get("content"))
            if user_text:
                break
    tool = _tool_name(body, msgs)
    seq = turn.seq
    if tool is not None:
        args = turn.tool_arguments(user_text)
        completion = max(1, mock_token_count(args))
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": f"toolu_mock{seq}",
            "name": tool,
            "input": orjson.loads(args),
        }
        stop = "tool_use"
        text = args
        if turn.preamble:  # text before the call, if asked for
            completion += mock_token_count(turn.preamble)
    else:
        text, truncated = turn.reply(user_text, body.get("max_tokens"))
        completion = mock_token_count(text)
        block = {"type": "text", "text": text}
        stop = "max_tokens" if truncated else "end_turn"
    message = {
        "id": f"msg_mock{seq}",
        "type": "message",
        "role": "assistant",
        "model": turn.model,
        "content": ([{"type": "text", "text": turn.preamble}]
                    if tool is not None and turn.preamble else []) + [block],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": anthropic_usage(prompt, completion),
    }
    if body.get("stream"):
        return await turn.send_events(_events(turn, message, text))
    return turn.json(message)


def _events(turn: Turn, message: dict[str, Any], text: str) -> Iterator[bytes]:
    """The official event order: start, block start, ping, deltas, block stop, delta, stop."""
    usage = message["usage"]
    start_usage = (
        anthropic_usage(0, 0) if turn.no_usage else anthropic_usage(usage["input_tokens"], 1)
    )
    yield _sse(
        {
            "type": "message_start",
            "message": {**message, "content": [], "stop_reason": None, "usage": start_usage},
        }
    )
    for index, block in enumerate(message["content"]):
        yield from _block_events(turn, index, block, text)
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
    }
    if not turn.no_usage:
        delta["usage"] = {"output_tokens": usage["output_tokens"]}
    yield _sse(delta)
    yield _sse({"type": "message_stop"})


def _block_events(turn: Turn, index: int, block: dict[str, Any], args: str) -> Iterator[bytes]:
    """One content block's start, deltas and stop; a tool_use block's input streams `args`."""
    if block["type"] == "tool_use":
        yield _sse(
            {"type": "content_block_start", "index": index,
             "content_block": {**block, "input": {}}}
        )
        if not index:
            yield _sse({"type": "ping"})
        for piece in split_chars(args, turn.chunks):
            yield _sse(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
            )
    else:
        yield _sse(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            }
        )
        if not index:
            yield _sse({"type": "ping"})
        for piece in split_pieces(block["text"], turn.chunks):
            yield _sse(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                }
            )
    yield _sse({"type": "content_block_stop", "index": index})


async def count_tokens(turn: Turn) -> web.StreamResponse:
    """``POST /v1/messages/count_tokens`` with the same rule as ``usage.input_tokens``."""
    invalid = _validate(turn, need_max_tokens=False)
    if invalid is not None:
        return invalid
    return turn.json({"input_tokens": input_tokens(turn.body)})


async def list_models(turn: Turn) -> web.StreamResponse:
    """``GET /v1/models`` for clients that send ``anthropic-version`` (Anthropic's shape)."""
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2024-01-01T00:00:00Z"}
        for m in MOCK_MODELS
    ]
    return turn.json(
        {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
    )


async def get_model(turn: Turn) -> web.StreamResponse:
    """``GET /v1/models/{id}`` in Anthropic's shape; every id exists."""
    model_id = turn.request.path.removeprefix("/v1/models/")
    return turn.json(
        {
            "type": "model",
            "id": model_id,
            "display_name": model_id,
            "created_at": "2024-01-01T00:00:00Z",
        }
    )


ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/v1/messages"): messages,
    ("POST", "/v1/messages/count_tokens"): count_tokens,
    ("GET", "/v1/models"): list_models,
    ("GET", "/v1/models/{id}"): get_model,
}
