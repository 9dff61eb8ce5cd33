"""What every provider adapter is: an upstream with its pool, its auth, its URLs, and the
translation of a client's request into the dialect it speaks (and of its answer back).

A provider kind is one module with one subclass of `Provider` (see `providers/registry.py`
for the list). The subclass says which dialect it speaks upstream and how a request of
another dialect is translated into it; the base class does the rest: the pooled client,
timeouts, which client headers go upstream, and forwarding the client's own bytes untouched
when nothing needs to change.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import aiohttp
import orjson
from yarl import URL

from tollway.config.model import PriceConfig, ProviderConfig
from tollway.errors import GatewayError
from tollway.protocols.base import Endpoint
from tollway.state.breakers import BreakerPolicy

if TYPE_CHECKING:
    from tollway.exchange import Exchange

# Client headers never sent upstream: hop-by-hop, our own, the client's credentials (the
# provider's come from the config), and what aiohttp sets itself.
DROP_REQUEST_HEADERS = frozenset({
    "host", "content-length", "connection", "keep-alive", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "authorization",
    "x-api-key", "api-key", "accept-encoding", "cookie", "expect",
})


class StreamTranslator(Protocol):
    def feed(self, blob: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


@dataclass(slots=True)
class Translation:
    """How the client's dialect maps onto the provider's for one attempt."""

    upstream: Endpoint  # the endpoint actually called
    response: Callable[[dict[str, Any], str], dict[str, Any]]
    error: Callable[[int, bytes], bytes]
    stream: Callable[[], StreamTranslator]


class Wire(Protocol):
    """A provider whose own answers are read as OpenAI chat from the first byte: its whole
    bodies and its streams are converted as they arrive, before the relay reads usage, tool
    calls or text (one reading for every provider behind it: Gemini's, say)."""

    def body(self, status: int, payload: bytes) -> tuple[bytes, dict[str, Any] | None]:
        """The answer as chat bytes, and the chat object when there is one (not parsed
        again)."""
        ...

    def stream(self) -> StreamTranslator: ...

    def streams(self, content_type: str) -> bool: ...


@dataclass(slots=True)
class Outgoing:
    """One upstream request, ready to send."""

    url: str | URL  # a URL built encoded=True goes out byte for byte (a signed path)
    headers: dict[str, str]
    data: bytes
    translation: Translation | None  # None: the provider speaks the client's dialect
    strip_usage: bool = False  # we asked for stream usage the client did not: strip it
    wire: Wire | None = None  # the provider's answers converted to chat first


def untranslatable(kind: str, exc: Any) -> GatewayError:
    return GatewayError(400, "untranslatable", f"this request cannot be sent to a {kind} "
                        f"model: {exc.message}", param=exc.param)


def mismatch(ex: Exchange, kind: str) -> GatewayError:
    client = ex.endpoint
    return GatewayError(400, "dialect_mismatch",
                        f"the model {ex.model_name!r} is served by a {kind} provider "
                        f"and cannot answer the {client.dialect.name} {client.name} endpoint",
                        param="model")


def _credential(header: str) -> bool:
    h = header.lower()
    return h == "authorization" or any(w in h for w in ("key", "token", "secret"))


def scrub(data: bytes, secrets: tuple[bytes, ...]) -> bytes:
    """`data` with every secret in it replaced (a byte search per secret when none is)."""
    for s in secrets:
        if s in data:
            data = data.replace(s, b"[redacted]")
    return data


class Provider(abc.ABC):
    """One upstream: where it is, how it authenticates, and its connection pool."""

    kind: ClassVar[str] = "abstract"
    dialect: ClassVar[str] = "abstract"  # what it speaks upstream
    # No public tokenizer for its models: prompt counts are estimates, corrected from usage.
    estimated_tokens: ClassVar[bool] = False
    # Its credentials are fetched (an OAuth token): `authorize` runs before each attempt.
    authorizes: ClassVar[bool] = False

    def __init__(self, name: str, cfg: ProviderConfig, demo_url: str | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.is_demo = demo_url is not None
        self.root = (demo_url if demo_url is not None else (cfg.base_url or "")).rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self.timeout = aiohttp.ClientTimeout(total=cfg.timeout_s,
                                             sock_connect=cfg.connect_timeout_s)
        self.stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=cfg.connect_timeout_s, sock_read=cfg.read_timeout_s)
        self._auth = dict(cfg.headers)
        if not (self.is_demo or cfg.passthrough_auth or not cfg.api_key):
            self._auth.update(self.auth_headers(cfg.api_key))
        # What must never travel back to a client, should the upstream echo it (a hostile or
        # careless 401 body, say): the key, and credential-looking configured headers.
        self.secrets = tuple(s.encode() for s in {
            cfg.api_key or "", *(v for k, v in cfg.headers.items() if _credential(k))}
            if len(s) >= 8)

    # --- what a kind says ---------------------------------------------------------------
    async def authorize(self) -> None:  # noqa: B027  (a no-op unless a kind fetches tokens)
        """Make sure the credentials request_headers() adds are fresh (`authorizes` kinds)."""

    def auth_headers(self, key: str) -> dict[str, str]:
        """The headers that carry the provider's API key."""
        return {"Authorization": f"Bearer {key}"}

    @abc.abstractmethod
    def url(self, endpoint: Endpoint, upstream_model: str) -> str:
        """The URL of one of the provider's own endpoints (in its dialect)."""

    def translate(self, ex: Exchange, upstream_model: str, default_max_tokens: int,
                  ) -> tuple[Translation, dict[str, Any]]:
        """A request of another dialect as this provider's request body, and how to read
        its answer back; GatewayError 400 when it cannot be."""
        raise mismatch(ex, self.kind)

    def extra_headers(self, client: Mapping[str, str]) -> dict[str, str]:
        """Headers the dialect needs beyond auth (a version header, say)."""
        return {}

    def passthrough(self, ex: Exchange, upstream_model: str) -> tuple[bytes, bool]:
        """The client's request as it is, but for the model name; (bytes, strip_usage)."""
        body = ex.body
        if body.get("model") != upstream_model:
            body["model"] = upstream_model
            ex.upstream.body_changed = True
        return (orjson.dumps(body) if ex.upstream.body_changed else ex.raw), False

    # --- the same for every kind ---------------------------------------------------------
    def outgoing(self, ex: Exchange, upstream_model: str, default_max_tokens: int,
                 ) -> Outgoing:
        client = ex.endpoint
        headers = self.request_headers(ex.request.headers)
        if client.dialect.name == self.dialect:
            data, strip = self.passthrough(ex, upstream_model)
            return Outgoing(self.url(client, upstream_model), headers, data, None, strip)
        tr, body = self.translate(ex, upstream_model, default_max_tokens)
        return Outgoing(self.url(tr.upstream, upstream_model), headers, orjson.dumps(body), tr)

    def request_headers(self, client: Mapping[str, str]) -> dict[str, str]:
        headers = {k: v for k, v in client.items()
                   if (lk := k.lower()) not in DROP_REQUEST_HEADERS
                   and not lk.startswith("x-tollway")}
        if self.cfg.passthrough_auth:
            for k in ("Authorization", "x-api-key", "api-key"):
                if k in client:
                    headers[k] = client[k]
        headers.update(self._auth)
        headers.update(self.extra_headers(client))
        headers["Content-Type"] = "application/json"
        return headers

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
