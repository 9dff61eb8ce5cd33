"""The mock provider must satisfy the official SDKs unchanged, since every gateway test and the
benchmark trust it to behave like the real OpenAI and Anthropic services."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import orjson
import pytest
import pytest_asyncio

from tollway.testing import MockProvider, MockSettings, mock_token_count
from tollway.testing.mock_provider import DEFAULT_REPLY_PREFIX, RecordedRequest

SRC = str(Path(__file__).resolve().parents[2] / "src")
USER = "please tell me about the weather in Paris today and tomorrow, thanks a lot friend"
REPLY = DEFAULT_REPLY_PREFIX + " ".join(USER.split()[:12])
OA_MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": USER},
]
OA_PROMPT = (3 + 3) + (3 + 15)  # per message: words + 3
TOOLS_OA: list[Any] = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}},
]
TOOLS_AN: list[Any] = [
    {"name": "lookup", "input_schema": {"type": "object"}},
    {"name": "other", "input_schema": {"type": "object"}},
]
QUERY_ARGS = '{"query":"please tell me about the"}'


@pytest_asyncio.fixture
async def mock() -> AsyncIterator[MockProvider]:
    """A mock on an ephemeral port in the test's own loop, for the async SDK clients."""
    provider = MockProvider()
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture
def threaded() -> Iterator[MockProvider]:
    """A mock on its own loop in a thread, so blocking sync SDK clients can call it."""
    provider = MockProvider()
    provider.start_in_thread()
    yield provider
    provider.stop_thread()


@pytest_asyncio.fixture
async def oa(mock: MockProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    """An async OpenAI client aimed at the mock; closed so no sockets leak between tests."""
    async with openai.AsyncOpenAI(
        base_url=mock.base_url + "/v1", api_key="sk-test", max_retries=0
    ) as client:
        yield client


@pytest_asyncio.fixture
async def an(mock: MockProvider) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """An async Anthropic client aimed at the mock."""
    async with anthropic.AsyncAnthropic(
        base_url=mock.base_url, api_key="sk-ant", max_retries=0
    ) as client:
        yield client


async def raw_post(
    mock: MockProvider,
    path: str,
    body: bytes | dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST with a bare aiohttp client, for asserting exact bytes the SDKs would hide."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            mock.base_url + path,
            data=data,
            headers={"content-type": "application/json", **(headers or {})},
        ) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


def sse_data(raw: bytes) -> list[Any]:
    """Decode the ``data:`` payloads of an SSE body ([DONE] kept as a string)."""
    out: list[Any] = []
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                payload = line[6:]
                out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


# -- basics ------------------------------------------------------------------------------------


def test_token_count_rule() -> None:
    assert mock_token_count("") == 0
    assert mock_token_count("   ") == 1
    assert mock_token_count("one two\tthree\nfour") == 4


def test_sync_clients(threaded: MockProvider) -> None:
    with openai.OpenAI(
        base_url=threaded.base_url + "/v1", api_key="sk-test", max_retries=0
    ) as client:
        done = client.chat.completions.create(model="gpt-mock", messages=OA_MESSAGES)
        stream = client.chat.completions.create(model="gpt-mock", messages=OA_MESSAGES, stream=True)
        chunks = list(stream)
    assert done.id.startswith("chatcmpl-mock")
    assert done.object == "chat.completion"
    assert done.model == "gpt-mock"
    assert done.choices[0].message.content == REPLY
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None
    assert done.usage.prompt_tokens == OA_PROMPT
    assert done.usage.completion_tokens == mock_token_count(REPLY)
    assert done.usage.total_tokens == OA_PROMPT + mock_token_count(REPLY)
    assert done.usage.prompt_tokens_details and done.usage.prompt_tokens_details.cached_tokens == 0
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)

    with anthropic.Anthropic(base_url=threaded.base_url, api_key="k", max_retries=0) as anth:
        msg = anth.messages.create(
            model="claude-mock", max_tokens=64, messages=[{"role": "user", "content": USER}]
        )
    assert msg.content[0].type == "text" and msg.content[0].text == REPLY
    recorded = threaded.requests[-1]
    assert isinstance(recorded, RecordedRequest)
    assert (recorded.method, recorded.path) == ("POST", "/v1/messages")
    assert recorded.json["max_tokens"] == 64
    assert "anthropic-version" in recorded.headers


# -- OpenAI chat -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_chat_stream_include_usage(mock: MockProvider, oa: openai.AsyncOpenAI) -> None:
    client = oa
    stream = await client.chat.completions.create(
        model="gpt-mock", messages=OA_MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == OA_PROMPT
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 8

    status, headers, raw = await raw_post(
        mock,
        "/v1/chat/completions",
        {
            "model": "m",
            "messages": OA_MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_data(raw)
    assert events[-1] == "[DONE]"
    assert raw.startswith(b'data: {"id":"chatcmpl-mock')
    assert events[0]["choices"][0]["delta"]["content"] == ""
    assert all("usage" in e and e["usage"] is None for e in events[:-2])
    assert events[-2]["choices"] == [] and events[-2]["usage"]["total_tokens"] > OA_PROMPT

    _, _, raw = await raw_post(
        mock, "/v1/chat/completions", {"model": "m", "messages": OA_MESSAGES, "stream": True}
    )
    assert b'"usage"' not in raw


@pytest.mark.asyncio
async def test_chat_tools(mock: MockProvider, oa: openai.AsyncOpenAI) -> None:
    client = oa
    done = await client.chat.completions.create(model="m", messages=OA_MESSAGES, tools=TOOLS_OA)
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert done.choices[0].finish_reason == "tool_calls"
    assert call.id.startswith("call_mock") and call.type == "function"
    assert call.function.name == "lookup"  # type: ignore[union-attr]
    assert call.function.arguments == QUERY_ARGS  # type: ignore[union-attr]
    assert done.usage and done.usage.completion_tokens == mock_token_count(QUERY_ARGS)

    chosen = await client.chat.completions.create(
        model="m",
        messages=OA_MESSAGES,
        tools=TOOLS_OA,
        tool_choice={"type": "function", "function": {"name": "other"}},
    )
    assert chosen.choices[0].message.tool_calls[0].function.name == "other"  # type: ignore

    stream = await client.chat.completions.create(
        model="m", messages=OA_MESSAGES, tools=TOOLS_OA, stream=True
    )
    chunks = [c async for c in stream]
    first = chunks[0].choices[0].delta.tool_calls[0]  # type: ignore[index]
    assert first.id and first.function and first.function.name == "lookup"
    args = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert args == QUERY_ARGS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    history = [
        *OA_MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": QUERY_ARGS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny and warm"},
    ]
    after = await client.chat.completions.create(model="m", messages=history, tools=TOOLS_OA)
    assert after.choices[0].message.content == REPLY
    assert after.usage and after.usage.prompt_tokens == OA_PROMPT + (3 + 5) + (3 + 3)
    none = await client.chat.completions.create(
        model="m", messages=OA_MESSAGES, tools=TOOLS_OA, tool_choice="none"
    )
    assert none.choices[0].message.tool_calls is None


@pytest.mark.asyncio
async def test_chat_max_tokens_and_reply_controls(
    mock: MockProvider, oa: openai.AsyncOpenAI
) -> None:
    client = oa
    cut = await client.chat.completions.create(model="m", messages=OA_MESSAGES, max_tokens=3)
    assert cut.choices[0].message.content == "This is tollway's"
    assert cut.choices[0].finish_reason == "length"
    cut2 = await client.chat.completions.create(
        model="m", messages=OA_MESSAGES, max_completion_tokens=2
    )
    assert cut2.choices[0].message.content == "This is"

    mock.settings.reply = "fixed answer"
    fixed = await client.chat.completions.create(model="m", messages=OA_MESSAGES)
    assert fixed.choices[0].message.content == "fixed answer"
    header = await client.chat.completions.create(
        model="m", messages=OA_MESSAGES, extra_headers={"x-mock-reply": "from header"}
    )
    assert header.choices[0].message.content == "from header"

    mock.settings.chunks = 2
    stream = await client.chat.completions.create(
        model="m",
        messages=OA_MESSAGES,
        stream=True,
        extra_headers={"x-mock-reply": "a b c d e", "x-mock-chunk-delay-ms": "20"},
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices[0].delta.content]
    assert pieces == ["a b ", "c d e"]

    start = time.perf_counter()
    await client.chat.completions.create(
        model="m", messages=OA_MESSAGES, extra_headers={"x-mock-latency-ms": "50"}
    )
    assert time.perf_counter() - start >= 0.05


# -- legacy completions, embeddings, models ----------------------------------------------------


@pytest.mark.asyncio
async def test_legacy_completions(mock: MockProvider, oa: openai.AsyncOpenAI) -> None:
    client = oa
    done = await client.completions.create(model="davinci-mock", prompt="say hello world")
    assert done.object == "text_completion"
    assert done.choices[0].text == DEFAULT_REPLY_PREFIX + "say hello world"
    assert done.usage and done.usage.prompt_tokens == 3
    stream = await client.completions.create(
        model="davinci-mock",
        prompt="say hello world",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == done.choices[0].text
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == done.usage


@pytest.mark.asyncio
async def test_embeddings(mock: MockProvider, oa: openai.AsyncOpenAI) -> None:
    client = oa
    default = await client.embeddings.create(model="emb", input=["alpha beta", "gamma"])
    assert mock.requests[-1].json["encoding_format"] == "base64"  # the SDK's default
    floats = await client.embeddings.create(
        model="emb", input=["alpha beta", "gamma"], encoding_format="float"
    )
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 8
    assert floats.data[0].embedding != floats.data[1].embedding
    assert floats.usage.prompt_tokens == 3 and floats.usage.total_tokens == 3
    wide = await client.embeddings.create(
        model="emb", input="alpha beta", dimensions=32, encoding_format="float"
    )
    assert len(wide.data[0].embedding) == 32
    assert abs(sum(v * v for v in wide.data[0].embedding) - 1.0) < 1e-5
    tokens = await client.embeddings.create(model="emb", input=[[1, 2, 3], [4]])
    assert tokens.usage.prompt_tokens == 4

    _, _, raw = await raw_post(
        mock, "/v1/embeddings", {"model": "e", "input": "x", "encoding_format": "base64"}
    )
    blob = base64.b64decode(orjson.loads(raw)["data"][0]["embedding"])
    assert len(struct.unpack("<8f", blob)) == 8


@pytest.mark.asyncio
async def test_models(
    mock: MockProvider, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    listed = [m.id async for m in oa.models.list()]
    assert "mock-gpt" in listed
    anth = [m.id async for m in an.models.list()]
    assert anth == listed


# -- responses ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_responses(mock: MockProvider, oa: openai.AsyncOpenAI) -> None:
    client = oa
    done = await client.responses.create(model="gpt-mock", input=USER, instructions="Be brief.")
    assert done.output_text == REPLY
    assert done.status == "completed"
    assert done.usage and done.usage.input_tokens == 2 + 3 + 15
    assert done.usage.output_tokens_details.reasoning_tokens == 0

    stream = await client.responses.create(model="gpt-mock", input=USER, stream=True)
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == REPLY
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == REPLY and final.response.usage is not None

    tools: list[Any] = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    called = await client.responses.create(model="gpt-mock", input=USER, tools=tools)
    item = called.output[0]
    assert item.type == "function_call" and item.name == "lookup"
    assert item.arguments == QUERY_ARGS
    followup = await client.responses.create(
        model="gpt-mock",
        tools=tools,
        input=[
            {"role": "user", "content": USER},
            {
                "type": "function_call",
                "call_id": item.call_id,
                "name": "lookup",
                "arguments": QUERY_ARGS,
            },
            {"type": "function_call_output", "call_id": item.call_id, "output": "sunny"},
        ],
    )
    assert followup.output_text == REPLY
    short = await client.responses.create(model="gpt-mock", input=USER, max_output_tokens=2)
    assert short.status == "incomplete" and short.output_text == "This is"


# -- Anthropic ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_anthropic_messages(mock: MockProvider, an: anthropic.AsyncAnthropic) -> None:
    client = an
    kwargs: dict[str, Any] = {
        "model": "claude-mock",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": USER}],
    }
    msg = await client.messages.create(**kwargs)
    assert msg.id.startswith("msg_mock") and msg.model == "claude-mock"
    assert msg.content[0].type == "text" and msg.content[0].text == REPLY
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 2 + 3 + 15
    assert msg.usage.output_tokens == mock_token_count(REPLY)
    assert msg.usage.cache_read_input_tokens == 0
    counted = await client.messages.count_tokens(
        model="claude-mock", system="Be brief.", messages=[{"role": "user", "content": USER}]
    )
    assert counted.input_tokens == msg.usage.input_tokens

    stream = await client.messages.create(**kwargs, stream=True)
    events = [e async for e in stream]
    assert [e.type for e in events[:2]] == ["message_start", "content_block_start"]
    assert [e.type for e in events[-3:]] == ["content_block_stop", "message_delta", "message_stop"]
    text = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == REPLY
    async with client.messages.stream(**kwargs) as helper:
        final = await helper.get_final_message()
    assert final.usage.output_tokens == msg.usage.output_tokens

    _, _headers, raw = await raw_post(mock, "/v1/messages", {**kwargs, "stream": True})
    names = [line[7:] for line in raw.decode().split("\n") if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    start = sse_data(raw)[0]
    assert start["message"]["usage"]["output_tokens"] == 1
    assert sse_data(raw)[-2]["usage"] == {"output_tokens": mock_token_count(REPLY)}

    short = await client.messages.create(**{**kwargs, "max_tokens": 2})
    assert short.stop_reason == "max_tokens" and short.content[0].text == "This is"  # type: ignore


@pytest.mark.asyncio
async def test_anthropic_tools(mock: MockProvider, an: anthropic.AsyncAnthropic) -> None:
    client = an
    messages: list[Any] = [{"role": "user", "content": [{"type": "text", "text": USER}]}]
    msg = await client.messages.create(model="c", max_tokens=50, messages=messages, tools=TOOLS_AN)
    block = msg.content[0]
    assert msg.stop_reason == "tool_use"
    assert block.type == "tool_use" and block.name == "lookup"
    assert block.id.startswith("toolu_mock") and block.input == {
        "query": "please tell me about the"
    }

    stream = await client.messages.create(
        model="c",
        max_tokens=50,
        messages=messages,
        tools=TOOLS_AN,
        stream=True,
        tool_choice={"type": "tool", "name": "other"},
    )
    events = [e async for e in stream]
    start = next(e for e in events if e.type == "content_block_start")
    assert start.content_block.type == "tool_use" and start.content_block.name == "other"
    partial = "".join(
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    )
    assert orjson.loads(partial) == {"query": "please tell me about the"}

    history: list[Any] = [
        *messages,
        {"role": "assistant", "content": [block.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}],
        },
    ]
    after = await client.messages.create(model="c", max_tokens=50, messages=history, tools=TOOLS_AN)
    assert after.content[0].type == "text" and after.content[0].text == REPLY
    assert after.usage.input_tokens == (3 + 15) + (3 + 5) + (3 + 1)
    none = await client.messages.create(
        model="c", max_tokens=50, messages=messages, tools=TOOLS_AN, tool_choice={"type": "none"}
    )
    assert none.stop_reason == "end_turn"


# -- fault injection ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_injected_status_errors(
    mock: MockProvider, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    with pytest.raises(openai.InternalServerError) as oa_err:
        await oa.chat.completions.create(
            model="m", messages=OA_MESSAGES, extra_headers={"x-mock-status": "500"}
        )
    assert oa_err.value.status_code == 500
    assert set(oa_err.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as limited:
        await oa.embeddings.create(
            model="e", input="x", extra_headers={"x-mock-status": "429", "x-mock-retry-after": "7"}
        )
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.InternalServerError):
        await an.messages.create(
            model="c",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-status": "500"},
        )
    with pytest.raises(anthropic.RateLimitError) as an_limited:
        await an.messages.create(
            model="c",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-status": "429"},
        )
    assert an_limited.value.response.headers["retry-after"] == "1"
    assert an_limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        await an.messages.create(
            model="c",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-status": "529"},
        )
    assert overloaded.value.status_code == 529


@pytest.mark.asyncio
async def test_disconnect_after(
    mock: MockProvider, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    received: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        stream = await oa.chat.completions.create(
            model="m",
            messages=OA_MESSAGES,
            stream=True,
            extra_headers={"x-mock-disconnect-after": "3"},
        )
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    with pytest.raises(openai.APIConnectionError):
        await oa.chat.completions.create(
            model="m", messages=OA_MESSAGES, extra_headers={"x-mock-disconnect-after": "0"}
        )
    events: list[Any] = []
    # The anthropic SDK does not wrap transport errors raised mid-stream.
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        an_stream = await an.messages.create(
            model="c",
            max_tokens=50,
            messages=[{"role": "user", "content": USER}],
            stream=True,
            extra_headers={"x-mock-disconnect-after": "4"},
        )
        async for event in an_stream:
            events.append(event)
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]  # the ping is not surfaced
    ok = await oa.chat.completions.create(model="m", messages=OA_MESSAGES)
    assert ok.choices[0].message.content == REPLY


@pytest.mark.asyncio
async def test_no_usage_header(mock: MockProvider) -> None:
    _, _, raw = await raw_post(
        mock,
        "/v1/chat/completions",
        {
            "model": "m",
            "messages": OA_MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers={"x-mock-no-usage": "1"},
    )
    assert b'"usage"' not in raw and sse_data(raw)[-1] == "[DONE]"
    _, _, raw = await raw_post(
        mock,
        "/v1/messages",
        {
            "model": "c",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": USER}],
        },
        headers={"x-mock-no-usage": "1"},
    )
    events = sse_data(raw)
    assert events[-2]["type"] == "message_delta" and "usage" not in events[-2]
    assert events[0]["message"]["usage"]["input_tokens"] == 0


@pytest.mark.asyncio
async def test_dialect_errors_and_auth(
    mock: MockProvider, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    status, _, raw = await raw_post(mock, "/v1/nope", {})
    assert status == 404 and set(orjson.loads(raw)["error"]) == {"message", "type", "param", "code"}
    status, _, raw = await raw_post(mock, "/v1/chat/completions", b"{not json")
    assert status == 400 and orjson.loads(raw)["error"]["type"] == "invalid_request_error"
    status, _, raw = await raw_post(mock, "/v1/messages", b"{not json")
    body = orjson.loads(raw)
    assert status == 400 and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"

    mock.settings.require_key = "right-key"
    with pytest.raises(openai.AuthenticationError):
        await oa.chat.completions.create(model="m", messages=OA_MESSAGES)
    with pytest.raises(anthropic.AuthenticationError):
        await an.messages.create(
            model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    async with openai.AsyncOpenAI(
        base_url=mock.base_url + "/v1", api_key="right-key", max_retries=0
    ) as good:
        assert (await good.chat.completions.create(model="m", messages=OA_MESSAGES)).choices
    status, _, _ = await raw_post(
        mock,
        "/v1/messages/count_tokens",
        {"model": "c", "messages": []},
        {"x-api-key": "right-key"},
    )
    assert status == 200


@pytest.mark.asyncio
async def test_request_log_is_bounded(mock: MockProvider) -> None:
    mock.requests.extend(RecordedRequest("GET", "/old", {}, None) for _ in range(1000))
    await raw_post(mock, "/v1/embeddings", {"model": "e", "input": "x"})
    assert len(mock.requests) == 1000
    assert mock.requests[-1].path == "/v1/embeddings" and mock.requests[-1].json["input"] == "x"


def test_command_line_entry_point() -> None:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway.testing.mock_provider", "--port", "0", "--reply", "hi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:")
        with openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client:
            done = client.chat.completions.create(model="m", messages=OA_MESSAGES)
        assert done.choices[0].message.content == "hi"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and b"Warning" not in err


def test_settings_defaults() -> None:
    settings = MockSettings()
    assert (settings.latency_ms, settings.chunk_delay_ms, settings.chunks) == (0.0, 0.0, 8)
    assert settings.reply is None and settings.require_key is None
    asyncio.run(_start_stop_twice())


async def _start_stop_twice() -> None:
    provider = MockProvider(MockSettings(reply="x"))
    first = await provider.start()
    await provider.stop()
    second = await provider.start()
    assert first != "" and provider.base_url == second
    await provider.stop()
