"""Ingress: read and parse the body once, and resolve the model name it asks for."""

from __future__ import annotations

import orjson
from aiohttp import web

from tollway.errors import GatewayError, bad_request
from tollway.exchange import Exchange
from tollway.providers.base import ModelRegistry
from tollway.stages.base import Stage


class Parse(Stage):
    name = "parse"

    def __init__(self, registry: ModelRegistry, max_body_bytes: int) -> None:
        self.registry = registry
        self.max_body_bytes = max_body_bytes

    async def on_request(self, ex: Exchange) -> None:
        try:
            ex.raw = await ex.request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise GatewayError(413, "request_too_large",
                               f"the request body is larger than the gateway's limit of "
                               f"{self.max_body_bytes} bytes (server.max_body_mb)") from exc
        if not ex.raw:
            raise bad_request("the request has no body; send a JSON object")
        try:
            body = orjson.loads(ex.raw)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}",
                              code="invalid_json") from exc
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object", code="invalid_json")
        ex.body = body
        ex.stream = body.get("stream") is True and ex.endpoint.streams
        model = body.get("model")
        ex.target.requested = model if isinstance(model, str) else ""
        ex.target.route = self.registry.resolve(model)
