"""The Gemini (Generative Language API) side of the mock provider, written from Google's
reference: `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`
and `:countTokens`, the `x-goog-api-key` header, `GenerateContentResponse` bodies with
`usageMetadata` (thinking tokens included), `functionCall` parts, and Google's error shape
`{"error": {"code", "message", "status"}}`.

It answers like the other dialects of the mock (the same reply text, x-mock-* headers, one
tool call when tools are offered, word-count "tokens"), so tests can compare providers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from tollway.testing.mock_common import Turn, mock_token_count, split_pieces

STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
          404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
          504: "DEADLINE_EXCEEDED"}
PREFIX = "/v1beta/models/"


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   ) -> web.Response:
    body = {"error": {"code": status, "message": message,
                      "status": STATUS.get(status, "UNKNOWN")}}
    return web.Response(status=status, body=orjson.dumps(body),
                        content_type="application/json", headers=headers)


VERTEX = "/v1/projects/"  # .../locations/{l}/publishers/{google|anthropic}/models/{m}:{method}


def is_gemini(path: str) -> bool:
    return path.startswith(PREFIX) or (path.startswith(VERTEX)
                                       and "/publishers/google/models/" in path)


def is_vertex_claude(path: str) -> bool:
    return path.startswith(VERTEX) and "/publishers/anthropic/models/" in path


def model_of(path: str) -> tuple[str, str]:
    """(model, method) of .../models/{model}:{method}."""
    spec = path.rsplit("/models/", 1)[-1]
    model, _, method = spec.partition(":")
    return model, method


async def token(request: web.Request) -> web.Response:
    """Google's OAuth token endpoint for a service account's signed JWT (the grant type
    and the assertion are checked; the signature is google-auth's business)."""
    form = await request.post()
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" \
            or not form.get("assertion"):
        return web.json_response({"error": "invalid_grant"}, status=400)
    return web.json_response({"access_token": MOCK_TOKEN, "expires_in": 3600,
                              "token_type": "Bearer"})


MOCK_TOKEN = "ya29.mock-vertex-access-token"


async def handle(turn: Turn) -> web.StreamResponse:
    model, method = model_of(turn.request.path)
    body = turn.body
    if method == "countTokens" and isinstance(body.get("generateContentRequest"), dict):
        body = body["generateContentRequest"]  # the whole request a generateContent would be
    contents = body.get("contents")
    if not model or method not in ("generateContent", "streamGenerateContent", "countTokens"):
        return error_response(404, f"method {method!r} not found", turn.extra_headers())
    if not isinstance(contents, list) or not contents:
        return error_response(400, "* GenerateContentRequest.contents: contents is not "
                              "specified", turn.extra_headers())
    prompt = _prompt_tokens(body)
    if method == "countTokens":
        return turn.json({"totalTokens": prompt})
    last = contents[-1] if isinstance(contents[-1], dict) else {}
    text_in = " ".join(p.get("text", "") for p in last.get("parts") or ()
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    config = body.get("generationConfig") or {}
    tool = _tool_name(body, last)
    thoughts = 7 if (config.get("thinkingConfig") or {}).get("thinkingBudget") else 0
    if tool is not None:
        args = orjson.loads(turn.tool_arguments(text_in))
        parts: list[dict[str, Any]] = [{"functionCall": {"name": tool, "args": args}}]
        out_tokens, finish = mock_token_count(orjson.dumps(args).decode()), "STOP"
        pieces: list[dict[str, Any]] = [{"functionCall": {"name": tool, "args": args}}]
    else:
        reply, cut = turn.reply(text_in, config.get("maxOutputTokens"))
        parts = [{"text": reply}]
        out_tokens, finish = mock_token_count(reply), "MAX_TOKENS" if cut else "STOP"
        pieces = [{"text": p} for p in split_pieces(reply, turn.chunks)]
    if thoughts:
        parts = [{"text": "(thinking)", "thought": True}, *parts]
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": out_tokens,
             "totalTokenCount": prompt + out_tokens + thoughts}
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    rid = f"mockresp{turn.seq}"
    if method == "generateContent":
        return turn.json({"candidates": [{"content": {"role": "model", "parts": parts},
                                          "finishReason": finish, "index": 0}],
                          "usageMetadata": usage, "modelVersion": model, "responseId": rid})
    if turn.request.query.get("alt") != "sse":
        return error_response(400, "this mock streams with alt=sse only", turn.extra_headers())
    return await turn.send_events(_events(pieces, usage, finish, model, rid, turn.no_usage))


def _events(pieces: list[dict[str, Any]], usage: dict[str, Any], finish: str, model: str,
            rid: str, no_usage: bool) -> Iterator[bytes]:
    running = dict(usage, candidatesTokenCount=0, totalTokenCount=usage["promptTokenCount"])
    for i, part in enumerate(pieces or [{"text": ""}]):
        last = i == len(pieces) - 1 or not pieces
        cand: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
        if last:
            cand["finishReason"] = finish
        event: dict[str, Any] = {"candidates": [cand], "modelVersion": model, "responseId": rid}
        if not no_usage:
            event["usageMetadata"] = usage if last else running
        yield b"data: " + orjson.dumps(event) + b"\r\n\r\n"


def _tool_name(body: dict[str, Any], last: dict[str, Any]) -> str | None:
    decls = [d for t in body.get("tools") or () if isinstance(t, dict)
             for d in t.get("functionDeclarations") or () if isinstance(d, dict)]
    if not decls:
        return None
    mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {})
    if mode.get("mode") == "NONE":
        return None
    if mode.get("mode") == "ANY":
        allowed = mode.get("allowedFunctionNames") or [decls[0].get("name")]
        return str(allowed[0])
    if any(isinstance(p, dict) and "functionResponse" in p for p in last.get("parts") or ()):
        return None  # answer the tool's result with text
    return str(decls[0].get("name") or "tool")


def _prompt_tokens(body: dict[str, Any]) -> int:
    texts = [p.get("text", "") for c in body.get("contents") or () if isinstance(c, dict)
             for p in c.get("parts") or () if isinstance(p, dict)]
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        texts += [p.get("text", "") for p in system.get("parts") or () if isinstance(p, dict)]
    return max(1, sum(mock_token_count(t) for t in texts if isinstance(t, str)))
