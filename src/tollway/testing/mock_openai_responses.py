"""The Responses API (``POST /v1/responses``) of the mock's OpenAI dialect, streamed or not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web

from tollway.testing.mock_common import Turn, mock_token_count, split_chars, split_pieces
from tollway.testing.mock_openai_shapes import content_tokens, error_response, named_sse, text_of

__all__ = ["responses"]


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
            total += content_tokens(item.get("output"))
        else:
            total += content_tokens(item.get("content"))
            if item.get("role") == "user":
                last_user = text_of(item.get("content"))
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
        return named_sse(payload)

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
