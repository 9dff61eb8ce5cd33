"""Google's Gemini through the Generative Language API (`kind: gemini`, an API key).

An OpenAI chat completions request (or an Anthropic Messages one, through chat) becomes a
`generateContent` request, `streamGenerateContent?alt=sse` when streamed; the model is in the
URL, the key in `x-goog-api-key`. Gemini's answers are read as chat from their first byte
(`gemini_wire`), so usage, tool calls and the client's own dialect come from the same code as
for an OpenAI upstream. Gemini's tokenizer is not public: prompt counts are estimates,
corrected from the usage each answer reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from tollway.protocols import anthropic as an
from tollway.protocols import translate
from tollway.protocols.translate.gemini_answers import (
    GeminiToChatStream,
    gemini_error_to_openai,
    gemini_to_chat,
)
from tollway.protocols.translate.gemini_requests import chat_to_gemini
from tollway.providers.base import (
    Outgoing,
    Provider,
    Translation,
    untranslatable,
)
from tollway.providers.pivot import ChatWire, chat_pivot, pivot_outgoing

if TYPE_CHECKING:
    from tollway.exchange import Exchange
    from tollway.protocols.base import Endpoint


def gemini_wire(model: str) -> ChatWire:
    """Gemini's answers (Generative Language API and Vertex AI alike) as chat."""
    return ChatWire(model, gemini_to_chat, gemini_error_to_openai, GeminiToChatStream,
                    "text/event-stream")


class GeminiProvider(Provider):
    kind = "gemini"
    dialect = "gemini"  # no client speaks it: every request is translated
    estimated_tokens = True

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def url(self, endpoint: Endpoint, upstream_model: str) -> str:
        return self.model_url(upstream_model, stream=False)

    def model_url(self, upstream_model: str, stream: bool) -> str:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{self.root}/v1beta/models/{upstream_model}:{method}"

    def outgoing(self, ex: Exchange, upstream_model: str, default_max_tokens: int,
                 ) -> Outgoing:
        if ex.endpoint.name == "count_tokens":
            return self._count_tokens(ex, upstream_model)
        return gemini_outgoing(self, ex, self.model_url(upstream_model, ex.stream),
                               upstream_model)

    def _count_tokens(self, ex: Exchange, upstream_model: str) -> Outgoing:
        """Anthropic's count_tokens for a Gemini model: Gemini's own `countTokens` over the
        request it would send, its `totalTokens` as `input_tokens`."""
        try:
            chat = translate.messages_to_chat({**ex.body, "max_tokens": 1}, upstream_model)
            request = chat_to_gemini(chat)
        except translate.TranslationError as exc:
            raise untranslatable(self.kind, exc) from exc
        request["model"] = f"models/{upstream_model}"
        body = {"generateContentRequest": request}
        tr = Translation(upstream=an.COUNT_TOKENS,
                         response=lambda b, _: {"input_tokens": int(b.get("totalTokens") or 0)},
                         error=lambda status, payload: translate.error_to_anthropic(
                             status, gemini_error_to_openai(status, payload)),
                         stream=lambda: GeminiToChatStream(""))
        return Outgoing(f"{self.root}/v1beta/models/{upstream_model}:countTokens",
                        self.request_headers(ex.request.headers), orjson.dumps(body), tr)

    def translate(self, ex: Exchange, upstream_model: str, default_max_tokens: int,
                  ) -> tuple[Translation, dict[str, Any]]:
        return chat_as_gemini(ex, self.kind, upstream_model)


def gemini_outgoing(provider: Provider, ex: Exchange, url: str, upstream_model: str,
                    ) -> Outgoing:
    """A request to a Gemini model (the Generative Language API's or Vertex AI's URL)."""
    tr, body = chat_as_gemini(ex, provider.kind, upstream_model)
    return pivot_outgoing(ex, url, provider.request_headers(ex.request.headers),
                          orjson.dumps(body), tr, gemini_wire(ex.model_name))


def chat_as_gemini(ex: Exchange, kind: str, upstream_model: str,
                   ) -> tuple[Translation, dict[str, Any]]:
    return chat_pivot(ex, kind, upstream_model, chat_to_gemini)
