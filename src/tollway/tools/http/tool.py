"""An HTTP tool as configured: where its calls go (the URL, the path below /tools/<tool>, the
methods refused) and which headers cross the gateway, each way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from tollway.config.tools import HttpToolConfig
from tollway.tools.gate import ToolTarget, breaker_policy

if TYPE_CHECKING:
    from tollway.tools.http.body import _Body

REFUSED_METHODS = frozenset({"CONNECT", "TRACE"})  # TRACE would echo the tool's credentials
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade"})
_DROP_REQUEST = HOP_BY_HOP | {"host", "content-length", "expect", "authorization", "x-api-key"}
_DROP_RESPONSE = HOP_BY_HOP | {"content-length"}


@dataclass(frozen=True, slots=True)
class HttpTool:
    """One configured tool, resolved once per config."""

    name: str
    cfg: HttpToolConfig
    target: ToolTarget
    scheme_authority: str  # "https://api.example.com"
    path: str  # the configured URL's path, as written
    base_path: str  # without its trailing slash ("" for the root)
    base_query: str  # a query already in the configured URL, kept before the caller's
    headers: Mapping[str, str] = field(repr=False)  # credentials: never in a log line
    timeout: aiohttp.ClientTimeout
    max_bytes: int

    @classmethod
    def build(cls, name: str, cfg: HttpToolConfig) -> HttpTool:
        url = URL(cfg.url)
        return cls(
            name=name, cfg=cfg,
            target=ToolTarget(name=name, server="http", cost_usd=cfg.cost_usd,
                              breaker=breaker_policy(cfg.breaker),
                              fail_on_error=cfg.fail_on_4xx, fallback=cfg.fallback),
            scheme_authority=f"{url.scheme}://{url.raw_authority}",
            path=url.raw_path, base_path=url.raw_path.rstrip("/"),
            base_query=url.raw_query_string,
            headers=dict(cfg.headers),
            # Connect, then the silence between reads (the answer's start, a stream's
            # chunks) is bounded; how long a stream lasts is not.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout_s,
                                          sock_read=cfg.timeout_s),
            max_bytes=int(cfg.max_body_mb * 1024 * 1024))

    def url(self, tail: str, query: str) -> URL:
        q = "&".join(p for p in (self.base_query, query) if p)
        path = (self.base_path + tail if tail else self.path) or "/"
        return URL(f"{self.scheme_authority}{path}" + (f"?{q}" if q else ""), encoded=True)


def _split(request: web.Request) -> tuple[str, str]:
    """The raw path below /tools/<tool> ("" or "/...") and the raw query, as sent."""
    parts = request.rel_url.raw_path.split("/", 3)  # "", "tools", "<tool>", rest
    tail = "/" + parts[3] if len(parts) == 4 else ""
    return tail, request.rel_url.raw_query_string


def call_arguments(body: _Body, query: str) -> Any:
    """The call's arguments as a model would have emitted them: a JSON object body, else the
    query's parameters (what the tool gate finds the emitting answer by)."""
    if body.data and body.data.lstrip()[:1] == b"{":
        try:
            return orjson.loads(body.data)
        except orjson.JSONDecodeError:
            return None
    return dict(parse_qsl(query, keep_blank_values=True)) if query else None


def _upstream_headers(client: Mapping[str, str], tool: HttpTool,
                      body: _Body) -> CIMultiDict[str]:
    named = {h.strip().lower() for h in client.get("Connection", "").split(",") if h.strip()}
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in client.items():
        lk = k.lower()
        if lk in _DROP_REQUEST or lk in named or lk.startswith("x-tollway-"):
            continue
        out.add(k, v)
    for k, v in tool.headers.items():
        out[k] = v
    if body.streamed and body.length is not None:
        out["Content-Length"] = str(body.length)  # streamed, but not chunked
    return out


def _downstream_headers(upstream: Mapping[str, str]) -> CIMultiDict[str]:
    named = {h.strip().lower() for h in upstream.get("Connection", "").split(",")
             if h.strip()}
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in upstream.items():
        lk = k.lower()
        if lk in _DROP_RESPONSE or lk in named or lk.startswith("x-tollway"):
            continue
        out.add(k, v)
    return out

