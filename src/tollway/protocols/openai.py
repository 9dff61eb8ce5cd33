"""The OpenAI dialect: chat completions, completions, embeddings, responses."""

from __future__ import annotations

from typing import Any

import orjson

from tollway.errors import GatewayError
from tollway.exchange import Usage
from tollway.protocols.answers import ToolCallCapture
from tollway.protocols.base import ERROR_TYPES_OPENAI, Endpoint
from tollway.protocols.inputs import openai as inputs
from tollway.protocols.sse import TextCapture, data_of, event_data
from tollway.protocols.usage import BadUsage, detail, tokens, uncached

_NULL_USAGE = (b',"usage":null', b', "usage": null')
_USAGE_MARKERS = (b'"usage":{', b'"usage": {')


class OpenAIDialect:
    name = "openai"

    def validate(self, endpoint: str, body: dict[str, Any]) -> None:
        inputs.validate(endpoint, body)

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
        return _chat_usage(u)

    def observer(self, endpoint: Endpoint, strip_usage: bool, tools: bool = False,
                 ) -> ChatObserver | ResponsesObserver:
        if endpoint.name == "responses":
            obs: ChatObserver | ResponsesObserver = ResponsesObserver()
        else:
            text_key = "text" if endpoint.name == "completions" else None
            obs = ChatObserver(strip_usage, text_key=text_key)
        obs.calls = ToolCallCapture() if tools else None
        return obs

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


def _chat_usage(u: dict[str, Any]) -> Usage:
    """Chat and completions usage; BadUsage when a count is not one."""
    cached = detail(u, "prompt_tokens_details", "cached_tokens")
    return Usage(input=uncached(tokens(u.get("prompt_tokens")), cached),
                 output=tokens(u.get("completion_tokens")), cached=cached,
                 reasoning=detail(u, "completion_tokens_details", "reasoning_tokens"))


def _responses_usage(u: dict[str, Any]) -> Usage:
    cached = detail(u, "input_tokens_details", "cached_tokens")
    return Usage(input=uncached(tokens(u.get("input_tokens")), cached),
                 output=tokens(u.get("output_tokens")), cached=cached,
                 reasoning=detail(u, "output_tokens_details", "reasoning_tokens"))


class _Observer:
    """OpenAI streams carry usage once, at the end: having it means having the last word."""

    __slots__ = ("bad_usage", "calls", "capture", "finished", "response_id", "saw_content",
                 "usage")

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.capture = TextCapture(fields)
        self.bad_usage = False
        self.response_id: str | None = None  # Responses: the id a next call continues
        self.calls: ToolCallCapture | None = None
        self.usage: Usage | None = None
        self.saw_content = False
        self.finished = False

    @property
    def usage_final(self) -> bool:
        return self.usage is not None

    def text(self) -> str:
        return self.capture.text()


class ChatObserver(_Observer):
    """chat.completion.chunk / text_completion streams: usage, produced text, our extra chunk."""

    __slots__ = ("strip",)

    def __init__(self, strip_usage: bool, text_key: str | None = None) -> None:
        super().__init__((text_key,) if text_key else ("content", "refusal", "arguments"))
        self.strip = strip_usage

    def feed(self, blob: bytes) -> bytes:
        if self.capture.scan(blob):
            self.saw_content = True
        if self.calls is not None:
            self.calls.scan(blob)
        if b"data: [DONE]" in blob:
            self.finished = True
        for marker in _USAGE_MARKERS:
            at = blob.find(marker)
            while at >= 0:
                start = blob.rfind(b"\n\n", 0, at) + 2 if at else 0
                start = 0 if start == 1 else start
                end = blob.find(b"\n\n", at) + 2
                chunk = _usage_chunk(blob[start:end])
                if chunk is not None:
                    try:
                        usage = _chat_usage(chunk["usage"])
                    except BadUsage:
                        self.bad_usage = True
                    else:
                        self.usage = usage
                    if self.strip and not chunk.get("choices"):
                        blob = blob[:start] + blob[end:]  # the chunk only we asked for
                        at = blob.find(marker, start)
                        continue
                at = blob.find(marker, end)
        if self.strip:
            for pattern in _NULL_USAGE:
                if pattern in blob:
                    blob = blob.replace(pattern, b"")
        return blob


def _usage_chunk(event: bytes) -> dict[str, Any] | None:
    try:
        chunk = orjson.loads(event_data(event)[1])
    except orjson.JSONDecodeError:
        return None
    if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
        return chunk
    return None


class ResponsesObserver(_Observer):
    """Responses API streams: text deltas and the usage inside response.completed."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(("delta",))

    def feed(self, blob: bytes) -> bytes:
        if self.capture.scan(blob):
            self.saw_content = True
        if self.calls is not None:
            self.calls.scan(blob)
        for marker in (b"response.completed", b"response.incomplete", b"response.failed"):
            if marker not in blob:
                continue
            for ev in data_of(blob, marker):
                if isinstance(ev, dict) and ev.get("type") == marker.decode():
                    resp = ev.get("response") or {}
                    if isinstance(resp, dict) and isinstance(resp.get("id"), str):
                        self.response_id = resp["id"]
                    if isinstance(resp, dict) and isinstance(resp.get("usage"), dict):
                        try:
                            self.usage = _responses_usage(resp["usage"])
                        except BadUsage:
                            self.bad_usage = True
                    self.finished = True
        return blob


DIALECT = OpenAIDialect()
CHAT = Endpoint("chat", "/chat/completions", DIALECT)
COMPLETIONS = Endpoint("completions", "/completions", DIALECT)
EMBEDDINGS = Endpoint("embeddings", "/embeddings", DIALECT, streams=False)
RESPONSES = Endpoint("responses", "/responses", DIALECT)
