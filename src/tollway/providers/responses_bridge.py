"""`/v1/responses` to providers that are not OpenAI-compatible: the Responses request as a
chat request (protocols/translate/responses_requests.py), sent by the provider as any chat
request would be, and its answer (whatever the provider's own translation makes of it, read
as chat) as a Responses object or Responses stream events."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from tollway.protocols import openai as oa
from tollway.protocols.translate.errors import TranslationError
from tollway.protocols.translate.responses_answers import (
    ChatToResponsesStream,
    chat_response_to_responses,
)
from tollway.protocols.translate.responses_requests import responses_to_chat
from tollway.providers.base import (
    Outgoing,
    Provider,
    StreamTranslator,
    Translation,
    untranslatable,
)

if TYPE_CHECKING:
    from tollway.exchange import Exchange


def outgoing(provider: Provider, ex: Exchange, upstream_model: str,
             default_max_tokens: int) -> Outgoing:
    if ex.endpoint.name != "responses" or provider.dialect == "openai":
        return provider.outgoing(ex, upstream_model, default_max_tokens)
    try:
        chat = responses_to_chat(ex.body)
    except TranslationError as exc:
        raise untranslatable(provider.kind, exc) from exc
    view = copy.copy(ex)  # the same request, as chat (upstream, prompt... are shared);
    # these providers build their bodies from `body`, never from the client's bytes
    view.endpoint, view.body = oa.CHAT, chat
    inner = provider.outgoing(view, upstream_model, default_max_tokens)
    tr = inner.translation
    model = ex.model_name

    def response(body: dict[str, Any], name: str) -> dict[str, Any]:
        as_chat = tr.response(body, name) if tr is not None else body
        return chat_response_to_responses(as_chat, name)

    def stream() -> StreamTranslator:
        return _Chained(tr.stream() if tr is not None else None, ChatToResponsesStream(model))

    composed = Translation(
        upstream=tr.upstream if tr is not None else oa.CHAT, response=response,
        # chat's errors are OpenAI's shape, which is the Responses API's too
        error=tr.error if tr is not None else (lambda status, body: body), stream=stream)
    return Outgoing(inner.url, inner.headers, inner.data, composed, False, inner.wire)


class _Chained:
    __slots__ = ("first", "then")

    def __init__(self, first: StreamTranslator | None, then: StreamTranslator) -> None:
        self.first = first
        self.then = then

    def feed(self, blob: bytes) -> bytes:
        return self.then.feed(self.first.feed(blob) if self.first is not None else blob)

    def finish(self) -> bytes:
        tail = self.first.finish() if self.first is not None else b""
        return (self.then.feed(tail) if tail else b"") + self.then.finish()
