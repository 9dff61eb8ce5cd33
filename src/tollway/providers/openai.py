"""OpenAI and every OpenAI-compatible API (vLLM, Ollama, OpenRouter, Azure OpenAI...).

Streams: OpenAI sends usage only when asked (`stream_options.include_usage`), so a stream is
always asked for it; when the client did not ask, the usage chunk is stripped again on the
way back. An Anthropic Messages request is translated to chat completions and its answer,
stream and errors back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from tollway.protocols import openai as oa
from tollway.protocols import translate
from tollway.protocols.base import Endpoint
from tollway.providers.base import Provider, Translation, mismatch, untranslatable

if TYPE_CHECKING:
    from tollway.exchange import Exchange

_USAGE_MEMBER = b'"stream_options":{"include_usage":true}'


class OpenAIProvider(Provider):
    kind = "openai"
    dialect = "openai"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # The demo answers at its root; a configured base_url already ends in its /v1.
        self.base = self.root + "/v1" if self.is_demo else self.root
        self.azure = self.cfg.style == "azure" and not self.is_demo

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"api-key": key} if self.cfg.style == "azure" else {
            "Authorization": f"Bearer {key}"}

    def url(self, endpoint: Endpoint, upstream_model: str) -> str:
        if self.azure:
            return (f"{self.base}/openai/deployments/{upstream_model}{endpoint.path}"
                    f"?api-version={self.cfg.api_version}")
        return self.base + endpoint.path

    def passthrough(self, ex: Exchange, upstream_model: str) -> tuple[bytes, bool]:
        body, up = ex.body, ex.upstream
        if body.get("model") != upstream_model:
            body["model"] = upstream_model
            up.body_changed = True
        had_options = "stream_options" in body
        if ex.stream and _ask_usage(ex.endpoint, body):
            up.usage_injected = True
            if had_options or up.body_changed:
                up.body_changed = True
            else:
                # Only a new member to add: append it to the original bytes instead of
                # serialising the whole (often long) conversation again.
                ex.raw = ex.raw.rstrip()[:-1] + b"," + _USAGE_MEMBER + b"}"
        return (orjson.dumps(body) if up.body_changed else ex.raw), up.usage_injected

    def translate(self, ex: Exchange, upstream_model: str, default_max_tokens: int,
                  ) -> tuple[Translation, dict[str, Any]]:
        if ex.endpoint.name != "messages":
            raise mismatch(ex, self.kind)
        try:
            body = translate.messages_to_chat(ex.body, upstream_model)
        except translate.TranslationError as exc:
            raise untranslatable(self.kind, exc) from exc
        counted = ex.prompt.counted
        name = ex.model_name
        return Translation(
            upstream=oa.CHAT, response=translate.chat_response_to_messages,
            error=translate.error_to_anthropic,
            stream=lambda: translate.ChatToMessagesStream(name, counted)), body


def _ask_usage(endpoint: Endpoint, body: dict[str, Any]) -> bool:
    """Ask for usage in chat/completions streams; True when the body had to change."""
    if endpoint.name not in ("chat", "completions") or body.get("stream") is not True:
        return False
    opts = body.get("stream_options")
    if isinstance(opts, dict) and opts.get("include_usage") is True:
        return False
    body["stream_options"] = {**(opts if isinstance(opts, dict) else {}),
                              "include_usage": True}
    return True
