"""Identify: who is calling, from the virtual key (and x-tollway-agent where trusted)."""

from __future__ import annotations

from tollway.exchange import Exchange
from tollway.policy.identity import Identity
from tollway.stages.base import Stage


class Identify(Stage):
    name = "identify"

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def on_request(self, ex: Exchange) -> None:
        ex.caller = self.identity.resolve(ex.request.headers, tags=True)
