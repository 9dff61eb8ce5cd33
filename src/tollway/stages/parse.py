"""Ingress: read and parse the body once, check what the stages will read of it, and resolve
the model name it asks for.

Everything a client can get wrong in a body ends here, as a 4xx in the endpoint's dialect:
a body too slow (408), too large (413), not JSON, nested too deep, or with a field of the
wrong type (400, `param` naming it). The stages after this one may rely on the body being
a JSON object at most MAX_DEPTH deep whose read fields have their documented types.
"""

from __future__ import annotations

import orjson

from tollway.errors import bad_request
from tollway.exchange import Exchange
from tollway.ingress.body import read_body
from tollway.protocols.inputs import nesting_error, wrong_type
from tollway.providers.base import ModelRegistry
from tollway.stages.base import Stage


class Parse(Stage):
    name = "parse"

    def __init__(self, registry: ModelRegistry, max_body_bytes: int) -> None:
        self.registry = registry
        self.max_body_bytes = max_body_bytes

    async def on_request(self, ex: Exchange) -> None:
        ex.raw = raw = await read_body(ex.request, self.max_body_bytes)
        if not raw:
            raise bad_request("the request has no body; send a JSON object")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):
                raise nesting_error(None) from exc
            raise bad_request(f"the request body is not valid JSON: {exc}",
                              code="invalid_json") from exc
        if type(body) is not dict:
            raise bad_request("the request body must be a JSON object", code="invalid_json")
        ex.body = body
        endpoint = ex.endpoint
        ex.stream = body.get("stream") is True and endpoint.streams
        model = body.get("model")
        if model is not None and type(model) is not str:
            raise wrong_type("model", "a string", model)
        ex.target.requested = model or ""
        ex.target.route = self.registry.resolve(model)
        endpoint.dialect.validate(endpoint.name, body)  # types, and depth (MAX_DEPTH)

