"""HTTP tools: ANY /tools/<tool>/<path...> proxied to the tool's configured URL."""

from __future__ import annotations

from aiohttp import web

from tollway.config.model import Config
from tollway.observe.metrics import Metrics
from tollway.tools.gate import ToolGate


class HttpTools:
    def __init__(self, cfg: Config, gate: ToolGate, metrics: Metrics) -> None:
        self.cfg = cfg
        self.gate = gate
        self.metrics = metrics

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotImplemented()

    async def close(self) -> None:
        pass
