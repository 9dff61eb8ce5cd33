"""Providers reached through OpenAI chat: a client's chat request (or Anthropic Messages one,
through `messages_to_chat`) becomes the provider's body, and the provider's answers are read
as chat by its wire; what is left is chat to the client's own dialect (nothing for a chat
client, `chat_response_to_messages` and its stream for an Anthropic one). Gemini, Vertex's
Gemini and Bedrock's Converse share this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from tollway.protocols import openai as oa
from tollway.protocols import translate
from tollway.providers.base import (
    Outgoing,
    StreamTranslator,
    Translation,
    Wire,
    mismatch,
    untranslatable,
)

if TYPE_CHECKING:
    from yarl import URL

    from tollway.exchange import Exchange

Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChatWire:
    """A provider's answers as chat, for one request: its own body -> chat (`to_chat`), its
    error -> OpenAI's error shape, its stream (of `stream_type`) -> chat chunks."""

    model: str
    to_chat: Callable[[Body, str], Body]
    error: Callable[[int, bytes], bytes]
    streamer: Callable[[str], StreamTranslator]
    stream_type: str

    def body(self, status: int, payload: bytes) -> tuple[bytes, Body | None]:
        if status >= 300:
            return self.error(status, payload), None
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload, None  # not JSON: read as the unreadable answer it is
        if not isinstance(parsed, dict):
            return payload, None
        chat = self.to_chat(parsed, self.model)
        return orjson.dumps(chat), chat

    def stream(self) -> StreamTranslator:
        return self.streamer(self.model)

    def streams(self, content_type: str) -> bool:
        return content_type.startswith(self.stream_type)


def chat_pivot(ex: Exchange, kind: str, upstream_model: str,
               to_upstream: Callable[[Body], Body]) -> tuple[Translation, Body]:
    name = ex.endpoint.name
    if name not in ("chat", "messages"):
        raise mismatch(ex, kind)
    try:
        chat = ex.body if name == "chat" else translate.messages_to_chat(ex.body,
                                                                        upstream_model)
        body = to_upstream(chat)
    except translate.TranslationError as exc:
        raise untranslatable(kind, exc) from exc
    counted = ex.prompt.counted
    model = ex.model_name
    return Translation(
        upstream=oa.CHAT, response=translate.chat_response_to_messages,
        error=translate.error_to_anthropic,
        stream=lambda: translate.ChatToMessagesStream(model, counted)), body


def pivot_outgoing(ex: Exchange, url: str | URL, headers: dict[str, str], data: bytes,
                   tr: Translation, wire: Wire) -> Outgoing:
    if ex.endpoint.name == "chat":
        # read as the client's own dialect; a stream's usage is always there (the meter
        # needs it) and stripped when the client did not ask for it
        opts = ex.body.get("stream_options")
        asked = isinstance(opts, dict) and opts.get("include_usage") is True
        return Outgoing(url, headers, data, None, ex.stream and not asked, wire)
    return Outgoing(url, headers, data, tr, False, wire)
