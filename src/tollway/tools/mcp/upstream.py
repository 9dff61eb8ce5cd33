"""The MCP servers' side: one client session for all of them, the headers both ways, a
request sent, and what a transport error is."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tollway.config.tools import McpServerConfig
from tollway.errors import GatewayError
from tollway.observe.metrics import Metrics

_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                  "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
                  "upgrade", "content-length", "host"})
# The caller's credentials and the gateway's own headers stay here; aiohttp negotiates its
# own encoding with the server and hands over plain bytes.
_DROP_IN = _HOP | {"authorization", "x-api-key", "accept-encoding"}
_DROP_OUT = _HOP | {"content-encoding", "date", "server"}


class McpUpstream:
    """The gateway as the MCP servers' client."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                auto_decompress=True, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def upstream_headers(self, request: web.Request, srv: McpServerConfig,
                         ) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict()
        for k, v in request.headers.items():
            lk = k.lower()
            if lk in _DROP_IN or lk.startswith("x-tollway-"):
                continue
            out.add(k, v)
        for k, v in srv.headers.items():
            out[k] = v
        return out

    @staticmethod
    def client_headers(upstream: aiohttp.ClientResponse, rid: str) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict()
        for k, v in upstream.headers.items():
            if k.lower() not in _DROP_OUT:
                out.add(k, v)
        out["x-tollway-request-id"] = rid
        return out

    async def send(self, method: str, request: web.Request, srv: McpServerConfig,
                   headers: CIMultiDict[str], body: bytes | None,
                   long_lived: bool = False) -> aiohttp.ClientResponse:
        url = srv.url + (f"?{request.query_string}" if request.query_string else "")
        timeout = aiohttp.ClientTimeout(total=None, connect=srv.connect_timeout_s,
                                        sock_connect=srv.connect_timeout_s,
                                        sock_read=None if long_lived else srv.timeout_s)
        return await self.session.request(method, url, headers=headers, data=body or None,
                                          timeout=timeout, allow_redirects=False)

    def transport_error(self, server: str, exc: BaseException) -> GatewayError:
        if isinstance(exc, TimeoutError):
            self.metrics.upstream_errors.labels(server, "timeout").inc()
            return GatewayError(504, "upstream_timeout",
                                f"MCP server {server!r} did not answer in time")
        self.metrics.upstream_errors.labels(server, "unreachable").inc()
        return GatewayError(502, "upstream_error", f"MCP server {server!r} is unreachable or "
                            f"dropped the connection ({type(exc).__name__})")
