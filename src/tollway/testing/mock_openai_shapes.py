"""OpenAI's wire shapes that every endpoint of the mock's OpenAI dialect uses: the error body,
the usage object, SSE framing and counting a message's content.

Kept apart from ``mock_openai`` so the Responses endpoint (``mock_openai_responses``) can use them
while ``mock_openai`` imports it for the route table.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tollway.testing.mock_common import JSON_TYPE, Turn, mock_token_count

__all__ = [
    "content_tokens",
    "error_response",
    "missing_param",
    "named_sse",
    "openai_usage",
    "sse",
    "text_of",
]

_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", None),
    409: ("invalid_request_error", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


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


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def named_sse(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def text_of(content: Any) -> str:
    """Text of a string content or a list of parts carrying ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return mock_token_count(content)
    if isinstance(content, list):
        return sum(
            mock_token_count(p["text"])
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return 0


def missing_param(param: str, turn: Turn) -> web.Response:
    return error_response(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
        headers=turn.extra_headers(),
    )
