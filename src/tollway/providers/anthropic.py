"""Anthropic's Messages API. An OpenAI chat completions request is translated to Messages and
its answer, stream and errors back. Claude's tokenizer is not public: prompt counts are
estimates, corrected from the usage each answer reports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tollway.protocols import anthropic as an
from tollway.protocols import translate
from tollway.protocols.base import Endpoint
from tollway.providers.base import Provider, Translation, mismatch, untranslatable

if TYPE_CHECKING:
    from tollway.exchange import Exchange


class AnthropicProvider(Provider):
    kind = "anthropic"
    dialect = "anthropic"
    estimated_tokens = True

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def extra_headers(self, client: Mapping[str, str]) -> dict[str, str]:
        if "anthropic-version" in client:
            return {}
        return {"anthropic-version": self.cfg.anthropic_version}

    def url(self, endpoint: Endpoint, upstream_model: str) -> str:
        return f"{self.root}/v1{endpoint.path}"

    def translate(self, ex: Exchange, upstream_model: str, default_max_tokens: int,
                  ) -> tuple[Translation, dict[str, Any]]:
        return chat_as_messages(ex, self.kind, upstream_model, default_max_tokens)


def chat_as_messages(ex: Exchange, kind: str, upstream_model: str, default_max_tokens: int,
                     ) -> tuple[Translation, dict[str, Any]]:
    """An OpenAI chat request as a Messages body, and how to read its answer back (for
    every provider that speaks Messages: Anthropic's API, Vertex AI, Bedrock)."""
    if ex.endpoint.name != "chat":
        raise mismatch(ex, kind)
    try:
        body = translate.chat_to_messages(ex.body, upstream_model, default_max_tokens)
    except translate.TranslationError as exc:
        raise untranslatable(kind, exc) from exc
    options = ex.body.get("stream_options")
    asked = (isinstance(options, dict) and options.get("include_usage") is True
             and not ex.upstream.usage_injected)
    name = ex.model_name
    return Translation(
        upstream=an.MESSAGES, response=translate.messages_response_to_chat,
        error=translate.error_to_openai,
        stream=lambda: translate.MessagesToChatStream(name, asked)), body
