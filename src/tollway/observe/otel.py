"""Optional OpenTelemetry export: one CLIENT span per request, with the GenAI semantic
conventions (gen_ai.*) and tollway's own attributes (tollway.*), sent over OTLP/HTTP.

Off by default. Disabled, :meth:`Tracing.build` returns ``None`` without importing
``opentelemetry`` at all, so the gateway pays one ``is None`` test per request. Enabled, it
needs the ``otel`` extra (``pip install tollway[otel]``: ``opentelemetry-sdk`` and
``opentelemetry-exporter-otlp-proto-http``), imported on first use.

Spans are exported by the SDK's BatchSpanProcessor: ``finish`` only appends the ended span to a
bounded in-memory queue (the oldest spans are dropped when it is full) and a background thread
posts batches to the collector, so a slow or dead collector never blocks the event loop.

Each Tracing owns its TracerProvider; the process-wide OpenTelemetry globals are left alone, so
a config reload can build a new one and shut the old one down.

Sampling is ``parentbased_traceidratio``: a request that carries a W3C ``traceparent`` follows
its caller's sampled flag, one that starts a trace here is sampled at ``sample_ratio``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["OPERATIONS", "OtelConfig", "Tracing", "operation_for"]

# tollway endpoint name -> gen_ai.operation.name. Tool calls use "execute_tool".
OPERATIONS: dict[str, str] = {
    "chat": "chat",
    "messages": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}


def operation_for(endpoint: str) -> str:
    """The GenAI operation name of a tollway endpoint (its own name when none applies, e.g.
    ``count_tokens``)."""
    return OPERATIONS.get(endpoint, endpoint)


class OtelConfig(BaseModel):
    """``otel:`` in gateway.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    # The full OTLP/HTTP traces URL, signal path included.
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    # Sent with every export (e.g. an API key of a hosted backend).
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    service_name: str = "tollway"
    # Share of the traces that start here that are recorded; an incoming traceparent's sampled
    # flag decides for the traces it continues.
    sample_ratio: float = Field(1.0, ge=0, le=1)
    timeout_s: float = Field(5, gt=0)  # per export, retries included
    max_queue: int = Field(2048, ge=1)  # ended spans waiting for export; past it, dropped
    export_interval_ms: int = Field(500, ge=1)  # how often the queue is sent

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("endpoint must be an http:// or https:// URL, such as "
                             "http://127.0.0.1:4318/v1/traces")
        return v


_TRACE_HEADERS = ("traceparent", "tracestate")
_CI = (CIMultiDict, CIMultiDictProxy)


def _carrier(headers: Mapping[str, str]) -> dict[str, str]:
    """The W3C trace headers, whatever their case (aiohttp's headers are case-insensitive
    already; a plain dict may not be)."""
    found: dict[str, str] = {}
    for name in _TRACE_HEADERS:
        value = headers.get(name)
        if value is not None:
            found[name] = value
    if len(found) < len(_TRACE_HEADERS) and not isinstance(headers, _CI):
        for key, value in headers.items():
            low = key.lower()
            if low in _TRACE_HEADERS and low not in found:
                found[low] = value
    return found


class Tracing:
    """An OTLP span exporter for the gateway's requests. Build it with :meth:`build`."""

    def __init__(self, cfg: OtelConfig) -> None:
        try:
            from opentelemetry.context import Context
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
            from opentelemetry.trace import SpanKind, Status, StatusCode
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "otel.enabled needs the OpenTelemetry SDK and OTLP exporter: "
                "pip install 'tollway[otel]'") from e
        from tollway import __version__

        self.cfg = cfg
        self._kind = SpanKind.CLIENT
        self._status = Status
        self._error = StatusCode.ERROR
        self._propagator = TraceContextTextMapPropagator()
        # Without a traceparent a span starts a trace of its own, whatever the ambient context.
        self._root = Context()
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": cfg.service_name,
                                      "service.version": __version__}),
            sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)),
            shutdown_on_exit=False,  # Gateway.stop shuts it down; no atexit hook per reload
        )
        exporter = OTLPSpanExporter(endpoint=cfg.endpoint, headers=dict(cfg.headers),
                                    timeout=cfg.timeout_s)
        self._provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=cfg.max_queue,
            schedule_delay_millis=cfg.export_interval_ms,
            max_export_batch_size=min(512, cfg.max_queue),
            export_timeout_millis=cfg.timeout_s * 1000))
        self._tracer = self._provider.get_tracer("tollway", __version__)
        self._closed = False

    @classmethod
    def build(cls, cfg: OtelConfig) -> Tracing | None:
        """A Tracing when ``cfg.enabled``; otherwise None, and nothing is imported."""
        if not cfg.enabled:
            return None
        return cls(cfg)

    def start(self, headers: Mapping[str, str], operation: str, started_ns: int) -> Any:
        """Open the request's span, continuing the caller's W3C trace context when its headers
        carry a valid ``traceparent``. ``started_ns``: wall-clock nanoseconds since the epoch
        (``time.time_ns()``). Returns an opaque handle for :meth:`finish`."""
        carrier = _carrier(headers)
        parent = self._propagator.extract(carrier) if carrier else self._root
        return self._tracer.start_span(
            operation, context=parent, kind=self._kind,
            attributes={"gen_ai.operation.name": operation}, start_time=started_ns)

    def finish(self, handle: Any, *, provider: str, request_model: str, response_model: str,
               input_tokens: int, output_tokens: int, session: str, agent: str, team: str,
               status: int, error_code: str | None, cost_usd: float, cache: str,
               rule: str | None, end_ns: int, request_id: str | None = None,
               tool_name: str | None = None) -> None:
        """Record the outcome on the span and end it (queued for export, never sent here).
        Empty strings are left out. A second call, or one for an unsampled span, does
        nothing."""
        if handle is None or not handle.is_recording():
            return
        target = tool_name or request_model
        if target:
            handle.update_name(f"{handle.name} {target}")  # "{operation} {model}"
        attrs: dict[str, Any] = {
            "gen_ai.usage.input_tokens": int(input_tokens),
            "gen_ai.usage.output_tokens": int(output_tokens),
            "tollway.cost_usd": float(cost_usd),
            "tollway.status": int(status),
        }
        for key, value in (("gen_ai.provider.name", provider),
                           ("gen_ai.request.model", request_model),
                           ("gen_ai.response.model", response_model),
                           ("gen_ai.conversation.id", session),
                           ("gen_ai.agent.id", agent),
                           ("gen_ai.tool.name", tool_name),
                           ("tollway.team", team),
                           ("tollway.cache", cache),
                           ("tollway.rule", rule),
                           ("tollway.request_id", request_id)):
            if value:
                attrs[key] = value
        if status >= 400:
            kind = error_code or str(status)
            attrs["error.type"] = kind
            handle.set_status(self._status(self._error, kind))
        handle.set_attributes(attrs)
        handle.end(end_time=end_ns)

    def traceparent(self, handle: Any) -> str:
        """The handle's span as a W3C ``traceparent`` value ("" when there is none): for a
        response header, or to propagate upstream."""
        if handle is None:
            return ""
        ctx = handle.get_span_context()
        if not ctx.is_valid:
            return ""
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"

    async def flush(self) -> bool:
        """Export every ended span now (in a worker thread); True unless already shut down.
        An export that fails is logged by the exporter and dropped, not raised."""
        if self._closed:
            return False
        return bool(await asyncio.get_running_loop().run_in_executor(
            None, self._provider.force_flush))

    async def shutdown(self) -> None:
        """Send what is queued (bounded by ``timeout_s``) and stop the export thread. The
        blocking part runs in a worker thread; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._provider.shutdown)
