"""Provider URL and header building: OpenAI, Azure-style, Anthropic, passthrough."""

from __future__ import annotations

from tollway.config.model import ProviderConfig
from tollway.protocols.anthropic import MESSAGES
from tollway.protocols.openai import CHAT
from tollway.providers.registry import make_provider as Provider

CLIENT = {"Authorization": "Bearer sk-tw-agent", "x-api-key": "sk-tw-agent",
          "Content-Length": "10", "Connection": "keep-alive", "x-tollway-session": "s",
          "x-stainless-lang": "python", "OpenAI-Beta": "assistants=v2"}


def test_openai_uses_its_key_never_the_clients() -> None:
    p = Provider("o", ProviderConfig(kind="openai", base_url="https://api.example/v1/",
                                     api_key="sk-up"))
    assert p.url(CHAT, "m") == "https://api.example/v1/chat/completions"
    h = p.request_headers(CLIENT)
    assert h["Authorization"] == "Bearer sk-up"
    assert "x-api-key" not in h and "Content-Length" not in h and "Connection" not in h
    assert "x-tollway-session" not in h
    assert h["x-stainless-lang"] == "python" and h["OpenAI-Beta"] == "assistants=v2"


def test_azure_style() -> None:
    p = Provider("az", ProviderConfig(kind="openai", style="azure", api_version="2024-10-21",
                                      base_url="https://res.openai.azure.com", api_key="k"))
    assert p.url(CHAT, "gpt4o-deploy") == (
        "https://res.openai.azure.com/openai/deployments/gpt4o-deploy/chat/completions"
        "?api-version=2024-10-21")
    h = p.request_headers(CLIENT)
    assert h["api-key"] == "k" and "Authorization" not in h


def test_anthropic_key_and_version() -> None:
    p = Provider("a", ProviderConfig(kind="anthropic", base_url="https://api.anthropic.com",
                                     api_key="sk-ant"))
    assert p.url(MESSAGES, "claude") == "https://api.anthropic.com/v1/messages"
    h = p.request_headers(CLIENT)
    assert h["x-api-key"] == "sk-ant" and h["anthropic-version"] == "2023-06-01"
    h2 = p.request_headers({**CLIENT, "anthropic-version": "2026-10-21"})
    assert h2["anthropic-version"] == "2026-10-21"


def test_passthrough_auth_forwards_the_clients_key() -> None:
    p = Provider("o", ProviderConfig(kind="openai", base_url="http://x/v1",
                                     passthrough_auth=True))
    assert p.request_headers(CLIENT)["Authorization"] == "Bearer sk-tw-agent"


def test_secrets_are_not_in_the_config_repr() -> None:
    cfg = ProviderConfig(kind="openai", base_url="http://x/v1", api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(cfg) and "sk-very-secret" not in str(cfg)
