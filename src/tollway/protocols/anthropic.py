"""The Anthropic Messages dialect."""

from __future__ import annotations

from typing import Any

import orjson

from tollway.errors import GatewayError
from tollway.exchange import Usage
from tollway.protocols.answers import ToolCallCapture
from tollway.protocols.base import ERROR_TYPES_ANTHROPIC, Endpoint
from tollway.protocols.inputs import anthropic as inputs
from tollway.protocols.sse import TextCapture, data_of
from tollway.protocols.usage import BadUsage, tokens


class AnthropicDialect:
    name = "anthropic"

    def validate(self, endpoint: str, body: dict[str, Any]) -> None:
        inputs.validate(endpoint, body)

    def error_body(self, err: GatewayError) -> bytes:
        return orjson.dumps({"type": "error", "error": {
            "type": ERROR_TYPES_ANTHROPIC.get(err.status, "api_error"), "message": err.message}})

    def stream_error(self, err: GatewayError) -> bytes:
        return b"event: error\ndata: " + self.error_body(err) + b"\n\n"

    def usage(self, endpoint: Endpoint, body: dict[str, Any]) -> Usage | None:
        u = body.get("usage")
        return _usage(u) if isinstance(u, dict) else None

    def observer(self, endpoint: Endpoint, strip_usage: bool, tools: bool = False,
                 ) -> MessagesObserver:
        obs = MessagesObserver()  # usage is always in message_start and message_delta
        obs.calls = ToolCallCapture() if tools else None
        return obs

    def prompt(self, endpoint: Endpoint, body: dict[str, Any]) -> tuple[list[Any], list[str]]:
        loose: list[str] = []
        system = body.get("system")
        if isinstance(system, str):
            loose.append(system)
        elif isinstance(system, list):
            loose.extend(b["text"] for b in system
                         if isinstance(b, dict) and isinstance(b.get("text"), str))
        if body.get("tools"):
            loose.append(orjson.dumps(body["tools"]).decode())
        msgs = body.get("messages")
        return (msgs if isinstance(msgs, list) else []), loose

    def session_seed(self, endpoint: Endpoint, body: dict[str, Any]) -> bytes:
        msgs = body.get("messages")
        first_user = next((m.get("content") for m in (msgs if isinstance(msgs, list) else ())
                           if isinstance(m, dict) and m.get("role") == "user"), None)
        return orjson.dumps([body.get("system"), first_user])


def _usage(u: dict[str, Any]) -> Usage:
    """BadUsage when a count is not one."""
    return Usage(input=tokens(u.get("input_tokens")), output=tokens(u.get("output_tokens")),
                 cached=tokens(u.get("cache_read_input_tokens")),
                 cache_write=tokens(u.get("cache_creation_input_tokens")))


class MessagesObserver:
    """Usage from message_start (input) and message_delta (cumulative output); produced text."""

    __slots__ = ("bad_usage", "calls", "capture", "finished", "response_id", "saw_content",
                 "usage", "usage_final")

    def __init__(self) -> None:
        self.bad_usage = False
        self.response_id: str | None = None
        self.capture = TextCapture(("text", "partial_json", "thinking"))
        self.calls: ToolCallCapture | None = None
        self.usage: Usage | None = None
        self.usage_final = False
        self.saw_content = False
        self.finished = False

    def text(self) -> str:
        return self.capture.text()

    def feed(self, blob: bytes) -> bytes:
        if self.capture.scan(blob):
            self.saw_content = True
        if self.calls is not None:
            self.calls.scan(blob)
        for marker in (b"message_start", b"message_delta"):
            if marker not in blob:
                continue
            for ev in data_of(blob, marker):
                if not isinstance(ev, dict) or ev.get("type") != marker.decode():
                    continue
                final = marker == b"message_delta"
                u = ev.get("usage") if final else (ev.get("message") or {}).get("usage")
                if isinstance(u, dict):
                    try:
                        self._usage(u, final)
                    except BadUsage:
                        self.bad_usage = True
        if b"message_stop" in blob:
            self.finished = True
        return blob

    def _usage(self, u: dict[str, Any], final: bool) -> None:
        if self.usage is None:
            self.usage = Usage()
        new = _usage(u)
        if not final or "input_tokens" in u:
            self.usage.input = new.input
            self.usage.cached = new.cached or self.usage.cached
            self.usage.cache_write = new.cache_write or self.usage.cache_write
        self.usage.output = max(self.usage.output, new.output)
        if final:
            self.usage_final = True


DIALECT = AnthropicDialect()
MESSAGES = Endpoint("messages", "/messages", DIALECT)
COUNT_TOKENS = Endpoint("count_tokens", "/messages/count_tokens", DIALECT, billable=False,
                        streams=False)
