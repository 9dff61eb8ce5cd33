"""The OpenAI dialect: chat completions, completions, embeddings, responses."""

from __future__ import annotations

from typing import Any

import orjson

from tollway.errors import GatewayError
from tollway.exchange import Usage
from tollway.protocols.base import ERROR_TYPES_OPENAI, Endpoint
from tollway.protocols.sse import event_data

_NULL_USAGE = (b',"usage":null', b', "usage": null')


class OpenAIDialect:
    name = "openai"

    def error_body(self, err: GatewayError) -> bytes:
        return orjson.dumps({"error": {
            "message": err.message, "type": ERROR_TYPES_OPENAI.get(err.status, "api_error"),
            "code": err.code, "param": err.param}})

    def stream_error(self, err: GatewayError) -> bytes:
        return b"data: " + self.error_body(err) + b"\n\n"

    def usage(self, endpoint: Endpoint, body: dict[str, Any]) -> Usage | None:
        u = body.get("usage")
        if not isinstance(u, dict):
            return None
        if endpoint.name == "responses":
            return _responses_usage(u)
        prompt = int(u.get("prompt_tokens") or 0)
        cached = int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        reasoning = int((u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
        return Usage(input=prompt - cached, output=int(u.get("completion_tokens") or 0),
                     cached=cached, reasoning=reasoning)

    def observer(self, endpoint: Endpoint, strip_usage: bool) -> ChatObserver | ResponsesObserver:
        if endpoint.name == "responses":
            return ResponsesObserver()
        text_key = "text" if endpoint.name == "completions" else None
        return ChatObserver(strip_usage, text_key=text_key)

    def prepare(self, endpoint: Endpoint, body: dict[str, Any]) -> bool:
        """Ask for usage in chat/completions streams; the observer strips what we added."""
        if endpoint.name not in ("chat", "completions") or body.get("stream") is not True:
            return False
        opts = body.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage") is True:
            return False
        body["stream_options"] = {**(opts if isinstance(opts, dict) else {}),
                                  "include_usage": True}
        return True

    def prompt(self, endpoint: Endpoint, body: dict[str, Any]) -> tuple[list[Any], list[str]]:
        loose: list[str] = []
        if endpoint.name == "chat":
            msgs = body.get("messages")
            tools = body.get("tools") or body.get("functions")
            if tools:
                loose.append(orjson.dumps(tools).decode())
            return (msgs if isinstance(msgs, list) else []), loose
        if endpoint.name == "responses":
            if isinstance(body.get("instructions"), str):
                loose.append(body["instructions"])
            if body.get("tools"):
                loose.append(orjson.dumps(body["tools"]).decode())
            inp = body.get("input")
            if isinstance(inp, str):
                loose.append(inp)
                return [], loose
            return (inp if isinstance(inp, list) else []), loose
        key = "prompt" if endpoint.name == "completions" else "input"
        value = body.get(key)
        if isinstance(value, str):
            loose.append(value)
        elif isinstance(value, list):
            loose.extend(v for v in value if isinstance(v, str))
        return [], loose

    def session_seed(self, endpoint: Endpoint, body: dict[str, Any]) -> bytes:
        if endpoint.name == "chat":
            msgs = body.get("messages") or []
            system = first_user = None
            for m in msgs if isinstance(msgs, list) else []:
                if not isinstance(m, dict):
                    continue
                role = m.get("role")
                if system is None and role in ("system", "developer"):
                    system = m.get("content")
                elif role == "user":
                    first_user = m.get("content")
                    break
            return orjson.dumps([system, first_user])
        if endpoint.name == "responses":
            inp = body.get("input")
            first = inp[0] if isinstance(inp, list) and inp else inp
            return orjson.dumps([body.get("instructions"), first, body.get("previous_response_id")
                                 is not None])
        if endpoint.name == "completions":
            return orjson.dumps(body.get("prompt"))[:4096]
        return b"embeddings"


def _responses_usage(u: dict[str, Any]) -> Usage:
    cached = int((u.get("input_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0)
    return Usage(input=int(u.get("input_tokens") or 0) - cached,
                 output=int(u.get("output_tokens") or 0), cached=cached, reasoning=reasoning)


class ChatObserver:
    """chat.completion.chunk / text_completion streams: usage, produced text, our extra chunk."""

    __slots__ = ("_text_key", "finished", "saw_content", "strip", "text", "usage")

    def __init__(self, strip_usage: bool, text_key: str | None = None) -> None:
        self.strip = strip_usage
        self._text_key = text_key
        self.usage: Usage | None = None
        self.text: list[str] = []
        self.saw_content = False
        self.finished = False

    @property
    def usage_final(self) -> bool:
        return self.usage is not None

    def event(self, raw: bytes) -> bytes | None:
        if raw.startswith(b"data: ") and raw.count(b"\n") == 2:
            data = raw[6:-2]
        else:
            data = event_data(raw)[1]
        if data == b"[DONE]":
            self.finished = True
            return raw
        if not data:
            return raw
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return raw
        if not isinstance(chunk, dict):
            return raw
        u = chunk.get("usage")
        if isinstance(u, dict):
            cached = int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
            self.usage = Usage(input=int(u.get("prompt_tokens") or 0) - cached,
                               output=int(u.get("completion_tokens") or 0), cached=cached)
            if self.strip and not chunk.get("choices"):
                return None  # the chunk only we asked for
        for choice in chunk.get("choices") or ():
            if self._text_key:
                t = choice.get(self._text_key)
            else:
                delta = choice.get("delta") or {}
                t = delta.get("content") or delta.get("refusal")
                for call in delta.get("tool_calls") or ():
                    fn = call.get("function") or {}
                    self.text.append((fn.get("name") or "") + (fn.get("arguments") or ""))
                    self.saw_content = True
            if t:
                self.text.append(t)
                self.saw_content = True
        if self.strip and u is None and b"usage" in raw:
            for pattern in _NULL_USAGE:
                if pattern in raw:
                    return raw.replace(pattern, b"", 1)
        return raw


class ResponsesObserver:
    """Responses API streams: text deltas and the usage inside response.completed."""

    __slots__ = ("finished", "saw_content", "text", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.text: list[str] = []
        self.saw_content = False
        self.finished = False

    @property
    def usage_final(self) -> bool:
        return self.usage is not None

    def event(self, raw: bytes) -> bytes | None:
        name, data = event_data(raw)
        if not data:
            return raw
        if name == b"response.output_text.delta" or b'"response.output_text.delta"' in data[:80]:
            try:
                self.text.append(orjson.loads(data).get("delta") or "")
            except orjson.JSONDecodeError:
                pass
            self.saw_content = True
        elif name in (b"response.completed", b"response.incomplete", b"response.failed") or (
                name is None and b'"response.completed"' in data[:80]):
            try:
                resp = orjson.loads(data).get("response") or {}
            except orjson.JSONDecodeError:
                return raw
            if isinstance(resp.get("usage"), dict):
                self.usage = _responses_usage(resp["usage"])
            self.finished = True
        return raw


DIALECT = OpenAIDialect()
CHAT = Endpoint("chat", "/chat/completions", DIALECT)
COMPLETIONS = Endpoint("completions", "/completions", DIALECT, operation="text_completion")
EMBEDDINGS = Endpoint("embeddings", "/embeddings", DIALECT, streams=False, operation="embeddings")
RESPONSES = Endpoint("responses", "/responses", DIALECT)
