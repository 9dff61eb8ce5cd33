"""An in-process OTLP/HTTP trace collector for tests: it accepts ``POST /v1/traces``
(``application/x-protobuf``, the OTLP exporter's default), decodes the spans and keeps them as
plain dicts in ``OtlpCollector.spans``.

Each span dict holds: ``name``, ``trace_id`` / ``span_id`` / ``parent_span_id`` (lower-case hex;
``parent_span_id`` is "" for a root span), ``trace_state``, ``kind`` ("CLIENT", "SERVER", ...),
``attributes`` (a dict of plain Python values), ``status`` (``{"code": "UNSET" | "OK" |
"ERROR", "message": str}``), ``start_ns`` / ``end_ns``, ``resource`` (the resource's
attributes) and ``scope`` (the instrumentation scope's name).

Set ``status`` to another code to make the collector refuse exports (spans are then not kept).

Needs ``opentelemetry-proto``, which the OTLP exporter depends on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from tollway.testing.local_server import LocalServer

__all__ = ["OtlpCollector"]

MAX_SPANS = 10_000


def _value(v: Any) -> Any:
    """An OTLP AnyValue as a plain Python value."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


class OtlpCollector(LocalServer):
    """An aiohttp server that records the spans OTLP/HTTP exporters send it."""

    what = "collector"

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests: list[dict[str, str]] = []  # the headers of every export request
        self.status = 200  # answer exports with this; not 200: the spans are not kept
        super().__init__()

    # -- lifecycle -----------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen and return the traces URL (``http://host:port/v1/traces``)."""
        return await super().start(host, port) + "/v1/traces"

    @property
    def url(self) -> str:
        """The traces endpoint to configure an exporter with."""
        return self.base_url + "/v1/traces"

    # -- reading -------------------------------------------------------------------------
    def clear(self) -> None:
        self.spans.clear()
        self.requests.clear()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["name"] == name]

    async def wait_for(self, count: int = 1, within_s: float = 10) -> list[dict[str, Any]]:
        """Poll until at least ``count`` spans arrived (for a collector on this loop)."""
        deadline = time.monotonic() + within_s
        while len(self.spans) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.spans)} spans arrived, expected {count}")
            await asyncio.sleep(0.01)
        return self.spans

    # -- handler -------------------------------------------------------------------------
    async def _traces(self, request: web.Request) -> web.Response:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )
        from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

        self.requests.append({k.lower(): v for k, v in request.headers.items()})
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text="only application/x-protobuf is accepted")
        if self.status != 200:
            return web.Response(status=self.status)
        body = await request.read()  # aiohttp has already undone a gzip Content-Encoding
        try:
            msg = ExportTraceServiceRequest.FromString(body)
        except Exception:
            return web.Response(status=400, text="not an ExportTraceServiceRequest")
        for rs in msg.resource_spans:
            resource = _attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    self.spans.append({
                        "name": sp.name,
                        "trace_id": sp.trace_id.hex(),
                        "span_id": sp.span_id.hex(),
                        "parent_span_id": sp.parent_span_id.hex(),
                        "trace_state": sp.trace_state,
                        "kind": Span.SpanKind.Name(sp.kind).removeprefix("SPAN_KIND_"),
                        "attributes": _attributes(sp.attributes),
                        "status": {
                            "code": Status.StatusCode.Name(sp.status.code)
                            .removeprefix("STATUS_CODE_"),
                            "message": sp.status.message},
                        "start_ns": sp.start_time_unix_nano,
                        "end_ns": sp.end_time_unix_nano,
                        "resource": resource,
                        "scope": ss.scope.name,
                    })
        if len(self.spans) > MAX_SPANS:
            del self.spans[: len(self.spans) - MAX_SPANS]
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")
