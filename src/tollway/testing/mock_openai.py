"""OpenAI dialect of the mock provider: chat, legacy completions, embeddings, responses, models.

Shapes follow the public API reference closely enough that the official ``openai`` SDK parses
them unchanged, and the gateway sees exactly what the real service would send. The Responses
endpoint lives in ``mock_openai_responses``, the shapes every endpoint shares (error body,
usage, SSE framing) in ``mock_openai_shapes``; this module holds the rest and the route table.
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from tollway.testing.mock_common import (
    MOCK_MODELS,
    Handler,
    Turn,
    mock_token_count,
    split_chars,
    split_pieces,
)
from tollway.testing.mock_openai_responses import responses
from tollway.testing.mock_openai_shapes import (
    content_tokens,
    error_response,
    missing_param,
    openai_usage,
    sse,
    text_of,
)

__all__ = ["ROUTES", "error_response", "openai_usage"]

_DONE = b"data: [DONE]\n\n"
_MODEL_CREATED = 1700000000


# -- chat completions --------------------------------------------------------------------------


def _chat_prompt_tokens(messages: list[Any]) -> int:
    total = 0
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        total += 3 + content_tokens(msg.get("content"))
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                total += mock_token_count(fn["arguments"])
        fc = msg.get("function_call")
        if isinstance(fc, dict) and isinstance(fc.get("arguments"), str):
            total += mock_token_count(fc["arguments"])
    return total


def _last_user_text(messages: list[Any]) -> str:
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return text_of(msg.get("content"))
    return ""


def _chat_tool_name(body: dict[str, Any], last_role: Any) -> str | None:
    """Name of the tool to call, or None when the mock should answer with text."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools or not isinstance(tools, list) or choice == "none":
        return None
    if isinstance(choice, dict):  # forced: called even right after a tool's result
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
        if isinstance(name, str):
            return name
    if last_role == "tool":
        return None
    first = tools[0] if isinstance(tools[0], dict) else {}
    for holder in (first.get("function"), first.get("custom"), first):
        if isinstance(holder, dict) and isinstance(holder.get("name"), str):
            return str(holder["name"])
    return "tool"


async def chat_completions(turn: Turn) -> web.StreamResponse:
    """``POST /v1/chat/completions``: a text answer or one tool call, streamed or not."""
    body = turn.body
    messages = body.get("messages")
    if not isinstance(body.get("model"), str):
        return error_response(
            400, "you must provide a model parameter", headers=turn.extra_headers()
        )
    if not isinstance(messages, list) or not messages:
        return missing_param("messages", turn)
    prompt = _chat_prompt_tokens(messages)
    last = messages[-1]
    user_text = _last_user_text(messages)
    tool = _chat_tool_name(body, last.get("role") if isinstance(last, dict) else None)
    seq = turn.seq
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if tool is not None:
        args = turn.tool_arguments(user_text)
        text, finish = turn.preamble, "tool_calls"  # text before the call, if asked for
        completion = max(1, mock_token_count(args)) + mock_token_count(text or "")
        call = {
            "id": f"call_mock{seq}",
            "type": "function",
            "function": {"name": tool, "arguments": args},
        }
    else:
        text, truncated = turn.reply(user_text, limit)
        completion = mock_token_count(text)
        finish = "length" if truncated else "stop"
        call = None
    usage = openai_usage(prompt, completion)
    if turn.settings.usage_override:
        usage.update(turn.settings.usage_override)
    if body.get("stream"):
        opts = body.get("stream_options")
        include = isinstance(opts, dict) and opts.get("include_usage") is True and not turn.no_usage
        return await turn.send_events(_chat_events(turn, text, call, finish, usage, include))
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": [],
    }
    if call is not None:
        message["tool_calls"] = [call]
    return turn.json(
        {
            "id": f"chatcmpl-mock{seq}",
            "object": "chat.completion",
            "created": turn.created,
            "model": turn.model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }
    )


def _chat_events(
    turn: Turn,
    text: str | None,
    call: dict[str, Any] | None,
    finish: str,
    usage: dict[str, Any],
    include_usage: bool,
) -> Iterator[bytes]:
    """The chat.completion.chunk sequence, ending with the optional usage chunk and [DONE]."""
    base: dict[str, Any] = {
        "id": f"chatcmpl-mock{turn.seq}",
        "object": "chat.completion.chunk",
        "created": turn.created,
        "model": turn.model,
        "system_fingerprint": "fp_mock",
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        payload = {
            **base,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            payload["usage"] = None
        return sse(payload)

    if call is None:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in split_pieces(text or "", turn.chunks):
            yield chunk({"content": piece})
    else:
        fn = call["function"]
        if text:
            yield chunk({"role": "assistant", "content": "", "refusal": None})
            for piece in split_pieces(text, turn.chunks):
                yield chunk({"content": piece})
        yield chunk(
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": fn["name"], "arguments": ""},
                    }
                ],
            }
        )
        for piece in split_chars(fn["arguments"], turn.chunks):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    yield chunk({}, finish)
    if include_usage:
        yield sse({**base, "choices": [], "usage": usage})
    yield _DONE


# -- legacy completions ------------------------------------------------------------------------


def _prompt_stats(prompt: Any) -> tuple[int, str]:
    """(token count, last text) of a legacy prompt: str, list of str, or token arrays."""
    if isinstance(prompt, str):
        return mock_token_count(prompt), prompt
    if isinstance(prompt, list):
        if all(isinstance(t, int) for t in prompt):
            return len(prompt), ""
        total, last = 0, ""
        for item in prompt:
            if isinstance(item, str):
                total += mock_token_count(item)
                last = item
            elif isinstance(item, list):
                total += len(item)
        return total, last
    return 0, ""


async def completions(turn: Turn) -> web.StreamResponse:
    """``POST /v1/completions``: the legacy ``text_completion`` endpoint."""
    body = turn.body
    if not isinstance(body.get("model"), str):
        return error_response(
            400, "you must provide a model parameter", headers=turn.extra_headers()
        )
    prompt, last = _prompt_stats(body.get("prompt", ""))
    text, truncated = turn.reply(last, body.get("max_tokens"))
    finish = "length" if truncated else "stop"
    usage = openai_usage(prompt, mock_token_count(text))
    base: dict[str, Any] = {
        "id": f"cmpl-mock{turn.seq}",
        "object": "text_completion",
        "created": turn.created,
        "model": turn.model,
        "system_fingerprint": "fp_mock",
    }
    if body.get("stream"):
        opts = body.get("stream_options")
        include = isinstance(opts, dict) and opts.get("include_usage") is True and not turn.no_usage
        return await turn.send_events(_completion_events(turn, base, text, finish, usage, include))
    return turn.json(
        {
            **base,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
        }
    )


def _completion_events(
    turn: Turn,
    base: dict[str, Any],
    text: str,
    finish: str,
    usage: dict[str, Any],
    include_usage: bool,
) -> Iterator[bytes]:
    def chunk(piece: str, finish_reason: str | None = None) -> bytes:
        payload = {
            **base,
            "choices": [
                {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            payload["usage"] = None
        return sse(payload)

    for piece in split_pieces(text, turn.chunks):
        yield chunk(piece)
    yield chunk("", finish)
    if include_usage:
        yield sse({**base, "choices": [], "usage": usage})
    yield _DONE


# -- embeddings --------------------------------------------------------------------------------


def embedding_vector(key: str, dims: int) -> bytes:
    """Deterministic unit vector for ``key`` as little-endian float32 bytes."""
    rng = random.Random(hashlib.blake2b(key.encode(), digest_size=16).digest())
    vec = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return struct.pack(f"<{dims}f", *(v / norm for v in vec))


async def embeddings(turn: Turn) -> web.StreamResponse:
    """``POST /v1/embeddings``: float lists or base64 float32 (the SDK's default)."""
    body = turn.body
    inp = body.get("input")
    items: list[tuple[str, int]] = []
    if isinstance(inp, str):
        items.append((inp, mock_token_count(inp)))
    elif isinstance(inp, list) and inp and all(isinstance(t, int) for t in inp):
        items.append((orjson.dumps(inp).decode(), len(inp)))
    elif isinstance(inp, list):
        for item in inp:
            if isinstance(item, str):
                items.append((item, mock_token_count(item)))
            elif isinstance(item, list):
                items.append((orjson.dumps(item).decode(), len(item)))
            else:
                return error_response(
                    400, "'$.input' is invalid.", param="input", headers=turn.extra_headers()
                )
    if not items:
        return missing_param("input", turn)
    dims = body.get("dimensions")
    dims = dims if isinstance(dims, int) and not isinstance(dims, bool) and dims > 0 else 8
    b64 = body.get("encoding_format") == "base64"
    data = []
    for index, (key, _) in enumerate(items):
        packed = embedding_vector(key, dims)
        vector: Any = (
            base64.b64encode(packed).decode() if b64 else list(struct.unpack(f"<{dims}f", packed))
        )
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(n for _, n in items)
    return turn.json(
        {
            "object": "list",
            "data": data,
            "model": turn.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


# -- models ------------------------------------------------------------------------------------


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": _MODEL_CREATED, "owned_by": "tollway"}


async def list_models(turn: Turn) -> web.StreamResponse:
    """``GET /v1/models`` in OpenAI's list shape."""
    return turn.json({"object": "list", "data": [_model(m) for m in MOCK_MODELS]})


async def get_model(turn: Turn) -> web.StreamResponse:
    """``GET /v1/models/{id}``: every id exists, so routing tests need no fixtures."""
    return turn.json(_model(turn.request.path.removeprefix("/v1/models/")))


ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/v1/chat/completions"): chat_completions,
    ("POST", "/v1/completions"): completions,
    ("POST", "/v1/embeddings"): embeddings,
    ("POST", "/v1/responses"): responses,
    ("GET", "/v1/models"): list_models,
    ("GET", "/v1/models/{id}"): get_model,
}
