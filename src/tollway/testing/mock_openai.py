"""OpenAI dialect of the mock provider: chat, legacy completions, embeddings, responses, models.

Shapes follow the public API reference closely enough that the official ``openai`` SDK parses
them unchanged, and the gateway sees exactly what the real service would send.
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

from tollway.testing.mock_provider import (
    JSON_TYPE,
    MOCK_MODELS,
    Handler,
    Turn,
    mock_token_count,
    split_chars,
    split_pieces,
)

__all__ = ["ROUTES", "error_response", "openai_usage"]

_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", None),
    409: ("invalid_request_error", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}
_DONE = b"data: [DONE]\n\n"
_MODEL_CREATED = 1700000000


def error_response(
    status: int,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    param: str | None = None,
    code: str | None = None,
    kind: str | None = None,
) -> web.Response:
    """An error in OpenAI's ``{"error": {message, type, param, code}}`` shape."""
    default_kind, default_code = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    payload = {
        "error": {
            "message": message,
            "type": kind or default_kind,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type=JSON_TYPE, headers=headers
    )


def openai_usage(prompt: int, completion: int) -> dict[str, Any]:
    """Chat/completions usage with the detail objects current OpenAI responses carry."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _named_sse(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _text_of(content: Any) -> str:
    """Text of a string content or a list of parts carrying ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _count(content: Any) -> int:
    if isinstance(content, str):
        return mock_token_count(content)
    if isinstance(content, list):
        return sum(
            mock_token_count(p["text"])
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return 0


def _missing(param: str, turn: Turn) -> web.Response:
    return error_response(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
        headers=turn.extra_headers(),
    )


# -- chat completions --------------------------------------------------------------------------


def _chat_prompt_tokens(messages: list[Any]) -> int:
    total = 0
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        total += 3 + _count(msg.get("content"))
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
            return _text_of(msg.get("content"))
    return ""


def _chat_tool_name(body: dict[str, Any], last_role: Any) -> str | None:
    """Name of the tool to call, or None when the mock should answer with text."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools or not isinstance(tools, list) or choice == "none" or last_role == "tool":
        return None
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
        if isinstance(name, str):
            return name
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
        return _missing("messages", turn)
    prompt = _chat_prompt_tokens(messages)
    last = messages[-1]
    user_text = _last_user_text(messages)
    tool = _chat_tool_name(body, last.get("role") if isinstance(last, dict) else None)
    seq = turn.seq
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if tool is not None:
        args = turn.tool_arguments(user_text)
        completion = max(1, mock_token_count(args))
        text, finish = None, "tool_calls"
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
        return _sse(payload)

    if call is None:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in split_pieces(text or "", turn.chunks):
            yield chunk({"content": piece})
    else:
        fn = call["function"]
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
        yield _sse({**base, "choices": [], "usage": usage})
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
        return _sse(payload)

    for piece in split_pieces(text, turn.chunks):
        yield chunk(piece)
    yield chunk("", finish)
    if include_usage:
        yield _sse({**base, "choices": [], "usage": usage})
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
        return _missing("input", turn)
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


# -- responses ---------------------------------------------------------------------------------


def _responses_stats(body: dict[str, Any]) -> tuple[int, str, bool]:
    """(input tokens, last user text, last item is a tool result) of a Responses request."""
    inp = body.get("input")
    items: list[Any] = (
        [{"role": "user", "content": inp}]
        if isinstance(inp, str)
        else (inp if isinstance(inp, list) else [])
    )
    instructions = body.get("instructions")
    total = mock_token_count(instructions) if isinstance(instructions, str) else 0
    last_user = ""
    for item in items:
        if not isinstance(item, dict):
            continue
        total += 3
        kind = item.get("type")
        if kind == "function_call":
            total += mock_token_count(str(item.get("arguments", "")))
        elif kind == "function_call_output":
            total += _count(item.get("output"))
        else:
            total += _count(item.get("content"))
            if item.get("role") == "user":
                last_user = _text_of(item.get("content"))
    last = items[-1] if items else None
    tool_result = isinstance(last, dict) and last.get("type") == "function_call_output"
    return total, last_user, tool_result


def _responses_tool(body: dict[str, Any], tool_result: bool) -> str | None:
    tools = [
        t
        for t in body.get("tools") or ()
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str)
    ]
    choice = body.get("tool_choice")
    if not tools or choice == "none" or tool_result:
        return None
    if isinstance(choice, dict) and isinstance(choice.get("name"), str):
        return str(choice["name"])
    return str(tools[0]["name"])


async def responses(turn: Turn) -> web.StreamResponse:
    """``POST /v1/responses``: one message (or function_call) output item."""
    body = turn.body
    if not isinstance(body.get("model"), str):
        return error_response(
            400, "you must provide a model parameter", headers=turn.extra_headers()
        )
    prompt, user_text, tool_result = _responses_stats(body)
    tool = _responses_tool(body, tool_result)
    seq = turn.seq
    truncated = False
    if tool is not None:
        args = turn.tool_arguments(user_text)
        completion = max(1, mock_token_count(args))
        item: dict[str, Any] = {
            "id": f"fc_mock{seq}",
            "type": "function_call",
            "status": "completed",
            "arguments": args,
            "call_id": f"call_mock{seq}",
            "name": tool,
        }
    else:
        text, truncated = turn.reply(user_text, body.get("max_output_tokens"))
        completion = mock_token_count(text)
        item = {
            "id": f"msg_mock{seq}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [_output_text(text)],
        }
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }
    status = "incomplete" if truncated else "completed"
    if truncated:
        item["status"] = "incomplete"
    final = _response_object(turn, status, [item], usage)
    if body.get("stream"):
        if turn.no_usage:
            final["usage"] = None
        return await turn.send_events(_response_events(turn, item, final))
    return turn.json(final)


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _response_object(
    turn: Turn, status: str, output: list[Any], usage: dict[str, Any] | None
) -> dict[str, Any]:
    body = turn.body
    return {
        "id": f"resp_mock{turn.seq}",
        "object": "response",
        "created_at": turn.created,
        "status": status,
        "background": False,
        "completed_at": turn.created if status == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": turn.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _response_events(turn: Turn, item: dict[str, Any], final: dict[str, Any]) -> Iterator[bytes]:
    """The Responses streaming sequence, each event numbered by ``sequence_number``."""
    seq = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal seq
        payload = {"type": kind, "sequence_number": seq, **fields}
        seq += 1
        return _named_sse(payload)

    pending = {
        **final,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "completed_at": None,
        "incomplete_details": None,
    }
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    ids = {"item_id": item["id"], "output_index": 0}
    if item["type"] == "function_call":
        args = item["arguments"]
        yield event(
            "response.output_item.added",
            output_index=0,
            item={**item, "status": "in_progress", "arguments": ""},
        )
        for piece in split_chars(args, turn.chunks):
            yield event("response.function_call_arguments.delta", **ids, delta=piece)
        yield event("response.function_call_arguments.done", **ids, arguments=args)
    else:
        part = item["content"][0]
        yield event(
            "response.output_item.added",
            output_index=0,
            item={**item, "status": "in_progress", "content": []},
        )
        yield event("response.content_part.added", **ids, content_index=0, part=_output_text(""))
        for piece in split_pieces(part["text"], turn.chunks):
            yield event(
                "response.output_text.delta", **ids, content_index=0, delta=piece, logprobs=[]
            )
        yield event(
            "response.output_text.done", **ids, content_index=0, text=part["text"], logprobs=[]
        )
        yield event("response.content_part.done", **ids, content_index=0, part=part)
    yield event("response.output_item.done", output_index=0, item=item)
    yield event(f"response.{final['status']}", response=final)


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
