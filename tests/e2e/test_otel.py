"""OpenTelemetry through the gateway: the official openai SDK sends a W3C traceparent, and an
in-process OTLP collector receives the request's span, continuing that trace, with the GenAI
attributes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest

from tests.conftest import Loop, Stack
from tests.e2e.test_stream_cuts import wait_until
from tollway.testing.otlp_collector import OtlpCollector

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def collector(bg_loop: Loop) -> Iterator[OtlpCollector]:
    c = OtlpCollector()
    bg_loop.run(c.start())
    yield c
    bg_loop.run(c.stop())


def otel(collector: OtlpCollector, **extra: object) -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in extra.items())
    return (f'otel: {{enabled: true, endpoint: "{collector.url}", export_interval_ms: 20'
            f'{", " + fields if fields else ""}}}\n')


def test_span_continues_traceparent_with_genai_attributes(
        make_stack: Callable[..., Stack], collector: OtlpCollector) -> None:
    stack = make_stack(extra=otel(collector, service_name="tollway-e2e"))
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-tw-support", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES,  # type: ignore[arg-type]
        extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                       "tracestate": "agentfw=1"})
    r = raw.parse()
    assert r.usage is not None
    wait_until(lambda: len(collector.spans) >= 1)

    [span] = collector.spans
    assert span["name"] == "chat gpt-4o-mini"
    assert span["kind"] == "CLIENT"
    assert span["trace_id"] == TRACE_ID and span["parent_span_id"] == PARENT_ID
    assert span["trace_state"] == "agentfw=1"
    assert span["resource"]["service.name"] == "tollway-e2e"
    assert span["status"]["code"] == "UNSET"
    a = span["attributes"]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini"
    assert a["gen_ai.usage.input_tokens"] == r.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == r.usage.completion_tokens
    assert a["gen_ai.conversation.id"] == raw.headers["x-tollway-session"]
    assert a["gen_ai.agent.id"] == "support-bot"
    assert a["tollway.team"] == "support"
    assert a["tollway.status"] == 200
    assert a["tollway.cache"] == raw.headers["x-tollway-cache"]
    assert a["tollway.cost_usd"] == pytest.approx(float(raw.headers["x-tollway-cost-usd"]))
    assert a["tollway.request_id"] == raw.headers["x-tollway-request-id"]
    assert span["end_ns"] > span["start_ns"]


def test_streaming_and_refusals_each_get_one_span(
        make_stack: Callable[..., Stack], collector: OtlpCollector) -> None:
    stack = make_stack(extra=otel(collector))
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-tw-support", max_retries=0)
    chunks = list(c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,  # type: ignore[arg-type]
                                            stream=True))
    assert chunks
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="no-such-model", messages=MESSAGES)  # type: ignore[arg-type]
    wait_until(lambda: len(collector.spans) >= 2)
    streamed = collector.named("chat gpt-4o-mini")[0]
    assert streamed["parent_span_id"] == ""  # no traceparent: a trace of its own
    assert streamed["attributes"]["gen_ai.usage.output_tokens"] > 0
    refused = collector.named("chat no-such-model")[0]
    assert refused["status"]["code"] == "ERROR"
    assert refused["attributes"]["tollway.status"] == 404
    assert refused["attributes"]["error.type"]


def test_off_by_default(make_stack: Callable[..., Stack]) -> None:
    assert make_stack().gateway.tracing is None
