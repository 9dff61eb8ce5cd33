"""OpenTelemetry export: spans reach an in-process OTLP/HTTP collector with the GenAI
attributes, continue an incoming W3C traceparent, cost nothing when off and never block when
the collector is down."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from multidict import CIMultiDict
from pydantic import ValidationError

from tollway.observe.otel import OtelConfig, Tracing, operation_for
from tollway.testing.otlp_collector import OtlpCollector

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
async def collector() -> AsyncIterator[OtlpCollector]:
    c = OtlpCollector()
    await c.start()
    yield c
    await c.stop()


def config(url: str, **kw: Any) -> OtelConfig:
    # A long interval: nothing is exported behind the test's back; flush() sends it.
    return OtelConfig(enabled=True, endpoint=url, export_interval_ms=60_000, **kw)


def build(cfg: OtelConfig) -> Tracing:
    tracing = Tracing.build(cfg)
    assert tracing is not None
    return tracing


def outcome(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        provider="openai", request_model="gpt-4o-mini",
        response_model="gpt-4o-mini-2024-07-18", input_tokens=12, output_tokens=34,
        session="sess-1", agent="support-bot", team="support", status=200, error_code=None,
        cost_usd=0.0012, cache="miss", rule="cheap-first", end_ns=time.time_ns())
    base.update(kw)
    return base


def sampled(traceparent: str) -> bool:
    """The sampled bit of a traceparent's flags (0x02, "random trace id", may be set too)."""
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_span_received_with_genai_attributes(collector: OtlpCollector) -> None:
    tracing = build(config(collector.url, service_name="tollway-test",
                           headers={"x-backend-key": "k-123"}))
    try:
        started = time.time_ns()
        handle = tracing.start({}, "chat", started)
        tracing.finish(handle, **outcome(end_ns=started + 5_000_000))
        tracing.finish(handle, **outcome())  # a second finish is a no-op
        assert await tracing.flush()
    finally:
        await tracing.shutdown()

    assert len(collector.spans) == 1
    span = collector.spans[0]
    assert span["name"] == "chat gpt-4o-mini"
    assert span["kind"] == "CLIENT"
    assert span["parent_span_id"] == ""  # a new trace
    assert span["status"]["code"] == "UNSET"
    assert span["start_ns"] == started and span["end_ns"] == started + 5_000_000
    assert span["attributes"] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 34,
        "gen_ai.conversation.id": "sess-1",
        "gen_ai.agent.id": "support-bot",
        "tollway.team": "support",
        "tollway.status": 200,
        "tollway.cost_usd": pytest.approx(0.0012),
        "tollway.cache": "miss",
        "tollway.rule": "cheap-first",
    }
    assert span["resource"]["service.name"] == "tollway-test"
    assert span["scope"] == "tollway"
    assert collector.requests[0]["x-backend-key"] == "k-123"
    assert collector.requests[0]["content-type"] == "application/x-protobuf"
    tp = tracing.traceparent(handle)
    assert tp.startswith(f"00-{span['trace_id']}-{span['span_id']}-") and sampled(tp)


async def test_one_span_per_request_and_operation_names(collector: OtlpCollector) -> None:
    tracing = build(config(collector.url))
    try:
        for endpoint, model in (("chat", "a"), ("messages", "b"), ("responses", "c"),
                                ("completions", "d"), ("embeddings", "e")):
            h = tracing.start({}, operation_for(endpoint), time.time_ns())
            tracing.finish(h, **outcome(request_model=model, response_model=model))
        h = tracing.start({}, "execute_tool", time.time_ns())
        tracing.finish(h, **outcome(provider="", request_model="", response_model="",
                                    tool_name="lookup", request_id="req_1"))
        await tracing.flush()
    finally:
        await tracing.shutdown()
    names = sorted(s["name"] for s in collector.spans)
    assert names == ["chat a", "chat b", "chat c", "embeddings e", "execute_tool lookup",
                     "text_completion d"]
    assert len({s["span_id"] for s in collector.spans}) == 6
    assert len({s["trace_id"] for s in collector.spans}) == 6  # each its own trace
    tool = collector.named("execute_tool lookup")[0]["attributes"]
    assert tool["gen_ai.tool.name"] == "lookup" and tool["tollway.request_id"] == "req_1"
    assert "gen_ai.request.model" not in tool and "gen_ai.provider.name" not in tool


async def test_error_status(collector: OtlpCollector) -> None:
    tracing = build(config(collector.url))
    try:
        h = tracing.start({}, "chat", time.time_ns())
        tracing.finish(h, **outcome(status=429, error_code="budget_exceeded", response_model="",
                                    output_tokens=0, cost_usd=0.0, rule=None))
        h = tracing.start({}, "chat", time.time_ns())
        tracing.finish(h, **outcome(status=502, error_code=None))
        await tracing.flush()
    finally:
        await tracing.shutdown()
    refused, upstream = collector.spans
    assert refused["status"] == {"code": "ERROR", "message": "budget_exceeded"}
    assert refused["attributes"]["error.type"] == "budget_exceeded"
    assert refused["attributes"]["tollway.status"] == 429
    assert "gen_ai.response.model" not in refused["attributes"]
    assert "tollway.rule" not in refused["attributes"]
    assert upstream["status"]["code"] == "ERROR"
    assert upstream["attributes"]["error.type"] == "502"


@pytest.mark.parametrize("headers", [
    {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=abc"},
    {"Traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "TraceState": "vendor=abc"},
    CIMultiDict({"TRACEPARENT": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=abc"}),
], ids=["dict", "dict-mixed-case", "aiohttp-headers"])
async def test_continues_incoming_traceparent(collector: OtlpCollector, headers: Any) -> None:
    tracing = build(config(collector.url))
    try:
        h = tracing.start(headers, "chat", time.time_ns())
        tracing.finish(h, **outcome())
        await tracing.flush()
    finally:
        await tracing.shutdown()
    [span] = collector.spans
    assert span["trace_id"] == TRACE_ID
    assert span["parent_span_id"] == PARENT_ID
    assert span["span_id"] != PARENT_ID
    assert span["trace_state"] == "vendor=abc"
    assert tracing.traceparent(h) == f"00-{TRACE_ID}-{span['span_id']}-01"


@pytest.mark.parametrize("bad", ["garbage", f"00-{'0' * 32}-{PARENT_ID}-01",
                                 f"00-{TRACE_ID}-{'0' * 16}-01", f"ff-{TRACE_ID}-{PARENT_ID}-01"])
async def test_invalid_traceparent_starts_a_new_trace(collector: OtlpCollector,
                                                      bad: str) -> None:
    tracing = build(config(collector.url))
    try:
        h = tracing.start({"traceparent": bad}, "chat", time.time_ns())
        tracing.finish(h, **outcome())
        await tracing.flush()
    finally:
        await tracing.shutdown()
    [span] = collector.spans
    assert span["parent_span_id"] == "" and span["trace_id"] != TRACE_ID


def test_disabled_is_none_and_imports_nothing() -> None:
    code = (
        "import sys\n"
        "from tollway.observe.otel import OtelConfig, Tracing\n"
        "assert Tracing.build(OtelConfig()) is None\n"
        "assert Tracing.build(OtelConfig(enabled=False, endpoint='http://x:1/v1/traces')) is None\n"
        "loaded = [m for m in sys.modules if m == 'opentelemetry' or "
        "m.startswith(('opentelemetry.', 'google.protobuf'))]\n"
        "assert not loaded, loaded\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_sample_ratio_zero_exports_nothing(collector: OtlpCollector) -> None:
    tracing = build(config(collector.url, sample_ratio=0.0))
    try:
        root = tracing.start({}, "chat", time.time_ns())
        tracing.finish(root, **outcome())
        unsampled = tracing.start({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}, "chat",
                                  time.time_ns())
        tracing.finish(unsampled, **outcome())
        assert await tracing.flush()
    finally:
        await tracing.shutdown()
    assert collector.spans == [] and collector.requests == []
    # Unsampled spans still carry a trace context to propagate.
    tp = tracing.traceparent(root)
    assert len(tp) == 55 and not sampled(tp)
    tp = tracing.traceparent(unsampled)
    assert tp.startswith(f"00-{TRACE_ID}-") and not sampled(tp)


async def test_sampled_parent_decides_over_ratio(collector: OtlpCollector) -> None:
    tracing = build(config(collector.url, sample_ratio=0.0))
    try:
        h = tracing.start({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}, "chat",
                          time.time_ns())
        tracing.finish(h, **outcome())
        await tracing.flush()
    finally:
        await tracing.shutdown()
    assert [s["trace_id"] for s in collector.spans] == [TRACE_ID]


async def test_refused_export_is_not_raised(collector: OtlpCollector) -> None:
    collector.status = 400  # not retryable: fails at once
    tracing = build(config(collector.url))
    try:
        h = tracing.start({}, "chat", time.time_ns())
        tracing.finish(h, **outcome())
        await tracing.flush()
    finally:
        await tracing.shutdown()
    assert collector.spans == [] and len(collector.requests) == 1


class Blackhole:
    """A TCP server that accepts connections and never answers."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/traces"

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.parametrize("down", ["refused", "hanging"])
async def test_collector_down_neither_raises_nor_blocks(down: str) -> None:
    hole = Blackhole()
    url = (await hole.start() if down == "hanging"
           else f"http://127.0.0.1:{free_port()}/v1/traces")
    # A short interval so exports are attempted (and fail) while spans are being finished.
    tracing = build(OtelConfig(enabled=True, endpoint=url, timeout_s=0.5, max_queue=64,
                               export_interval_ms=10))
    gaps: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:  # measures how long the event loop is held up
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    try:
        began = time.perf_counter()
        for i in range(500):  # more than max_queue: the oldest are dropped, nothing waits
            h = tracing.start({}, "chat", time.time_ns())
            tracing.finish(h, **outcome(session=f"s{i}"))
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the heartbeat run in between
        assert time.perf_counter() - began < 2.0
        began = time.perf_counter()
        await asyncio.wait_for(tracing.shutdown(), 20)
        assert time.perf_counter() - began < 10  # bounded by the export timeout
    finally:
        stop.set()
        await beat
        if down == "hanging":
            await hole.stop()
    assert gaps and max(gaps) < 0.5
    await tracing.shutdown()  # again: a no-op
    assert not await tracing.flush()


def test_config_validation() -> None:
    assert OtelConfig().enabled is False
    assert OtelConfig().endpoint == "http://127.0.0.1:4318/v1/traces"
    with pytest.raises(ValidationError):
        OtelConfig(sample_ratio=1.5)
    with pytest.raises(ValidationError):
        OtelConfig(sample_ratio=-0.1)
    with pytest.raises(ValidationError):
        OtelConfig(max_queue=0)
    with pytest.raises(ValidationError):
        OtelConfig(endpoint="127.0.0.1:4318")
    with pytest.raises(ValidationError):
        OtelConfig(enabeld=True)  # type: ignore[call-arg]
    cfg = OtelConfig(headers={"authorization": "Bearer secret"})
    assert "secret" not in repr(cfg)
    with pytest.raises(ValidationError):
        cfg.enabled = True  # type: ignore[misc]


async def test_leaves_global_tracer_provider_alone(collector: OtlpCollector) -> None:
    from opentelemetry import trace

    before = trace.get_tracer_provider()
    tracing = build(config(collector.url))
    await tracing.shutdown()
    assert trace.get_tracer_provider() is before


async def test_ambient_context_is_not_a_parent(collector: OtlpCollector) -> None:
    """Only the request's headers decide the parent, never a span current in this task."""
    from opentelemetry import trace

    ambient = trace.NonRecordingSpan(trace.SpanContext(
        int(TRACE_ID, 16), int(PARENT_ID, 16), is_remote=False,
        trace_flags=trace.TraceFlags(1)))
    tracing = build(config(collector.url))
    try:
        with trace.use_span(ambient):
            h = tracing.start({}, "chat", time.time_ns())
            tracing.finish(h, **outcome())
        await tracing.flush()
    finally:
        await tracing.shutdown()
    [span] = collector.spans
    assert span["trace_id"] != TRACE_ID and span["parent_span_id"] == ""
