"""Providers with their pooled HTTP clients, and the model names that map onto them."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp

from tollway.config.model import (
    BreakerConfig,
    Config,
    ModelConfig,
    PriceConfig,
    ProviderConfig,
)
from tollway.config.tools import ToolBreakerConfig
from tollway.errors import GatewayError
from tollway.state.breakers import BreakerPolicy
from tollway.tokens.encodings import encoding_name_for_model

log = logging.getLogger("tollway.providers")

# Client headers never sent upstream: hop-by-hop, our own, the client's credentials (the
# provider's come from the config), and what aiohttp sets itself.
DROP_REQUEST_HEADERS = frozenset({
    "host", "content-length", "connection", "keep-alive", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "authorization",
    "x-api-key", "api-key", "accept-encoding", "cookie", "expect",
})


class Provider:
    """One upstream: where it is, how it authenticates, and its connection pool."""

    def __init__(self, name: str, cfg: ProviderConfig, demo_url: str | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.is_demo = cfg.kind == "demo" or (cfg.demo_if_no_key and not cfg.has_key)
        if self.is_demo:
            if demo_url is None:
                raise RuntimeError("the demo provider is not running")
            self.root = demo_url.rstrip("/")
            self.openai_base = self.root + "/v1"
        else:
            base = (cfg.base_url or "").rstrip("/")
            self.root = base
            self.openai_base = base
        self.kind = cfg.kind
        self._session: aiohttp.ClientSession | None = None
        self.timeout = aiohttp.ClientTimeout(total=cfg.timeout_s,
                                             sock_connect=cfg.connect_timeout_s)
        self.stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=cfg.connect_timeout_s, sock_read=cfg.read_timeout_s)
        self._auth = self._auth_headers()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.cfg.max_connections, ttl_dns_cache=300,
                                             keepalive_timeout=30, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=(
                "User-Agent",), auto_decompress=True, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _auth_headers(self) -> dict[str, str]:
        headers = dict(self.cfg.headers)
        key = self.cfg.api_key
        if self.is_demo or self.cfg.passthrough_auth or not key:
            return headers
        if self.kind == "anthropic":
            headers["x-api-key"] = key
        elif self.cfg.style == "azure":
            headers["api-key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def url(self, dialect: str, path: str, upstream_model: str) -> str:
        """`path` is the endpoint below the API root: "/chat/completions" or "/messages"."""
        if dialect == "anthropic":
            return f"{self.root}/v1{path}"
        if self.cfg.style == "azure" and not self.is_demo:
            return (f"{self.openai_base}/openai/deployments/{upstream_model}{path}"
                    f"?api-version={self.cfg.api_version}")
        return self.openai_base + path

    def request_headers(self, client: Mapping[str, str], dialect: str) -> dict[str, str]:
        headers = {k: v for k, v in client.items()
                   if (lk := k.lower()) not in DROP_REQUEST_HEADERS
                   and not lk.startswith("x-tollway")}
        if self.cfg.passthrough_auth:
            for k in ("Authorization", "x-api-key", "api-key"):
                if k in client:
                    headers[k] = client[k]
        headers.update(self._auth)
        if dialect == "anthropic" and "anthropic-version" not in client:
            headers["anthropic-version"] = self.cfg.anthropic_version
        return headers


@dataclass(slots=True, eq=False)
class Deployment:
    """One place that serves a model. Counters are this process's own view."""

    provider: Provider
    upstream_model: str
    weight: float
    breaker: BreakerPolicy | None
    inflight: int = 0
    ewma_s: float = 0.0  # time to the upstream's response headers, smoothed

    @property
    def target(self) -> str:
        """The breaker's name for it (bounded by the config: fine as a metric label)."""
        return f"{self.provider.name}/{self.upstream_model}"

    def observe_latency(self, seconds: float) -> None:
        self.ewma_s = seconds if not self.ewma_s else self.ewma_s * 0.8 + seconds * 0.2


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A configured model name resolved to the deployments that serve it."""

    name: str
    deployments: tuple[Deployment, ...]
    price: PriceConfig
    encoding: str
    tokenizer_factor: float
    estimated: bool  # no public tokenizer: prompt counts are estimates
    balance: str = "weighted"

    @property
    def provider(self) -> Provider:
        """The first deployment's provider stands for the model where only one matters."""
        return self.deployments[0].provider

    @property
    def upstream_model(self) -> str:
        return self.deployments[0].upstream_model

    def cost(self, input_: int, output: int, cached: int, cache_write: int) -> float:
        p = self.price
        cached_price = p.input if p.cached_input is None else p.cached_input
        write_price = p.input if p.cache_write is None else p.cache_write
        return (input_ * p.input + output * p.output + cached * cached_price
                + cache_write * write_price) / 1_000_000


class ModelRegistry:
    def __init__(self, routes: Iterable[ModelRoute]) -> None:
        self.routes = {r.name: r for r in routes}
        self._known = ", ".join(sorted(self.routes)) or "none"

    def resolve(self, name: object) -> ModelRoute:
        if not isinstance(name, str) or not name:
            raise GatewayError(400, "model_required",
                               f"the request names no model; known models: {self._known}",
                               param="model")
        route = self.routes.get(name)
        if route is None:
            raise GatewayError(404, "model_not_found",
                               f"the model {name!r} does not exist here; known models: "
                               f"{self._known}", param="model")
        return route


def build_providers(cfg: Config, demo_url: str | None) -> dict[str, Provider]:
    providers = {}
    for name, p in cfg.providers.items():
        providers[name] = Provider(name, p, demo_url)
        if providers[name].is_demo and p.kind != "demo":
            log.warning("provider %s has no API key: the in-process demo provider answers for it",
                        name)
    return providers


def needs_demo(cfg: Config) -> bool:
    return any(p.kind == "demo" or (p.demo_if_no_key and not p.has_key)
               for p in cfg.providers.values())


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
    anthropic = provider.kind == "anthropic" or (provider.kind == "demo" and "claude" in upstream)
    encoding = m.encoding or ("o200k_base" if anthropic else encoding_name_for_model(upstream))
    return ModelRoute(name=name, deployments=tuple(deps), price=m.price, encoding=encoding,
                      tokenizer_factor=m.tokenizer_factor, estimated=anthropic,
                      balance=m.balance)
