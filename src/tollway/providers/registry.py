"""The provider kinds, and the model names that map onto their deployments.

Adding a provider kind is one module with a `Provider` subclass, one entry in `ADAPTERS`,
and the kind's name in the config's `ProviderKind` literal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from tollway.config.model import BreakerConfig, Config, ModelConfig, ProviderConfig
from tollway.config.tools import ToolBreakerConfig
from tollway.providers.anthropic import AnthropicProvider
from tollway.providers.base import Deployment, ModelRegistry, ModelRoute, Provider
from tollway.providers.bedrock import BedrockProvider
from tollway.providers.gemini import GeminiProvider
from tollway.providers.openai import OpenAIProvider
from tollway.providers.vertex import VertexProvider
from tollway.state.breakers import BreakerPolicy
from tollway.tokens.encodings import encoding_name_for_model

log = logging.getLogger("tollway.providers")

ADAPTERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
    "vertex": VertexProvider,
    "bedrock": BedrockProvider,
}


def make_provider(name: str, cfg: ProviderConfig, demo_url: str | None = None) -> Provider:
    """`kind: demo` is the in-process demo provider speaking the dialect its config names;
    a provider with `demo_if_no_key` and no key is the demo speaking its own kind's."""
    demo = is_demo(cfg)
    if demo and demo_url is None:
        raise RuntimeError("the demo provider is not running")
    return ADAPTERS[cfg.speaks](name, cfg, demo_url if demo else None)


def is_demo(cfg: ProviderConfig) -> bool:
    return cfg.kind == "demo" or (cfg.demo_if_no_key and not cfg.has_key)


def build_providers(cfg: Config, demo_url: str | None) -> dict[str, Provider]:
    providers = {}
    for name, p in cfg.providers.items():
        providers[name] = make_provider(name, p, demo_url)
        if providers[name].is_demo and p.kind != "demo":
            log.warning("provider %s has no API key: the in-process demo provider answers for it",
                        name)
    return providers


def needs_demo(cfg: Config) -> bool:
    return any(is_demo(p) for p in cfg.providers.values())


def build_registry(cfg: Config, providers: Mapping[str, Provider]) -> ModelRegistry:
    return ModelRegistry(_route(name, m, providers, cfg.breakers)
                         for name, m in cfg.models.items())


def breaker_policy(b: BreakerConfig | ToolBreakerConfig | None) -> BreakerPolicy | None:
    if b is None:
        return None
    return BreakerPolicy(
        consecutive_failures=b.consecutive_failures, failure_rate=b.failure_rate,
        window_s=b.window_s, min_requests=b.min_requests,
        latency_s=b.latency_ms / 1000 if b.latency_ms else None, open_s=b.open_s,
        half_open_probes=b.half_open_probes)


def _route(name: str, m: ModelConfig, providers: Mapping[str, Provider],
           default_breaker: BreakerConfig | None) -> ModelRoute:
    upstream = m.model or name
    provider = providers[m.provider]
    breaker = breaker_policy(default_breaker if m.breaker is None else (m.breaker or None))
    deps = [Deployment(providers[d.provider], d.model or upstream, d.weight, breaker)
            for d in m.deployments] or [Deployment(provider, upstream, 1.0, breaker)]
    estimated = provider.estimated_tokens
    encoding = m.encoding or ("o200k_base" if estimated else encoding_name_for_model(upstream))
    return ModelRoute(name=name, deployments=tuple(deps), price=m.price, encoding=encoding,
                      tokenizer_factor=m.tokenizer_factor, estimated=estimated,
                      balance=m.balance)
