"""Error bodies from one dialect rendered in the other, so each SDK raises its own exceptions.

Both SDKs pick the exception class from the HTTP status, so the body mostly has to be in
the shape the SDK reads ``message`` from; the type is translated on a best-effort basis and
the upstream's own type travels along in OpenAI's free-form ``code``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson

from tollway.protocols.base import ERROR_TYPES_ANTHROPIC, ERROR_TYPES_OPENAI
from tollway.protocols.translate._common import dumps


class TranslationError(ValueError):
    """A request that cannot be expressed in the upstream's dialect; the client gets a 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


_ANTHROPIC_TO_OPENAI: dict[str, str] = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "rate_limit_error": "rate_limit_error",
    "billing_error": "insufficient_quota",
    "api_error": "server_error",
    "overloaded_error": "service_unavailable",
    "timeout_error": "timeout_error",
}


_Fields = tuple[str | None, str | None, Any, Any, bool]
_NONE: _Fields = (None, None, None, None, False)


def _fields(body: bytes) -> _Fields:
    """(message, type, code, param, Anthropic-shaped?) from any known error shape."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return _NONE
    if not isinstance(data, dict):
        return _NONE
    err = data.get("error", data)
    if isinstance(err, str):  # {"error": "text"} (some OpenAI-compatible servers)
        return err, None, None, None, False
    if not isinstance(err, dict):
        return _NONE
    message = err.get("message")
    if not isinstance(message, str):
        detail = err.get("detail")  # FastAPI-style servers
        message = detail if isinstance(detail, str) else (
            orjson.dumps(detail).decode() if detail else None)
    kind = err.get("type")
    return (message, kind if isinstance(kind, str) else None, err.get("code"), err.get("param"),
            data.get("type") == "error")


def _generic(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return f"The upstream provider returned HTTP {status} ({phrase})."


def openai_error(message: str, anthropic_type: str | None, status: int = 0) -> dict[str, Any]:
    """The OpenAI ``error`` object for an Anthropic error (also used for stream errors)."""
    kind = _ANTHROPIC_TO_OPENAI.get(anthropic_type or "") or ERROR_TYPES_OPENAI.get(
        status, "server_error" if status >= 500 or not status else "invalid_request_error")
    return {"message": message, "type": kind, "param": None, "code": anthropic_type}


def anthropic_type(openai_type: str | None, code: Any, status: int = 0) -> str:
    """The Anthropic error type for an OpenAI error: by status, else by type/code words."""
    if status in ERROR_TYPES_ANTHROPIC:
        return ERROR_TYPES_ANTHROPIC[status]
    words = f"{openai_type or ''} {code or ''}".lower()
    for needle, kind in (("rate_limit", "rate_limit_error"), ("quota", "billing_error"),
                         ("auth", "authentication_error"), ("api_key", "authentication_error"),
                         ("permission", "permission_error"), ("not_found", "not_found_error"),
                         ("overload", "overloaded_error"), ("timeout", "timeout_error"),
                         ("invalid_request", "invalid_request_error")):
        if needle in words:
            return kind
    if openai_type in ("requests", "tokens"):  # OpenAI's rate-limit types
        return "rate_limit_error"
    if 400 <= status < 500:
        return "invalid_request_error"
    return "api_error"


def error_to_openai(status: int, body: bytes) -> bytes:
    """An Anthropic (or unknown) error body as OpenAI's ``{"error": {...}}``."""
    message, kind, code, param, anthropic = _fields(body)
    if message is None:
        message = _generic(status)
    if kind is not None and not anthropic:  # already OpenAI-shaped: keep its details
        return dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})
    return dumps({"error": openai_error(message, kind, status)})


def error_to_anthropic(status: int, body: bytes) -> bytes:
    """An OpenAI (or unknown) error body as Anthropic's ``{"type": "error", "error": {...}}``."""
    message, kind, code, _, anthropic = _fields(body)
    if message is None:
        message = _generic(status)
    if not (anthropic and kind):
        kind = anthropic_type(kind, code, status)
    return dumps({"type": "error", "error": {"type": kind, "message": message}})
