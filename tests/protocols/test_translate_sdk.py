"""The official SDKs cannot tell a translated answer from a native one.

A tiny translating proxy (an aiohttp app, no gateway) sits between each SDK and the mock
provider: an OpenAI client talks to the mock's Anthropic Messages API, an Anthropic client
to its OpenAI chat API. Requests, answers, streams and errors all cross the translators, and
the SDKs' own parsers and stream accumulators have the last word.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from tollway.protocols.sse import EventSplitter
from tollway.protocols.translate import (
    ChatToMessagesStream,
    MessagesToChatStream,
    TranslationError,
    chat_response_to_messages,
    chat_to_messages,
    error_to_anthropic,
    error_to_openai,
    messages_response_to_chat,
    messages_to_chat,
)
from tollway.testing import MockProvider, MockSettings, mock_token_count

QUESTION = "What is the capital of France and why"
ARGS = {"query": "What is the capital of"}  # the mock's tool call: the first five words
OAI_TOOL: Any = {"type": "function", "function": {
    "name": "lookup", "description": "Look something up", "strict": True,
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                   "required": ["query"], "additionalProperties": False}}}
ANT_TOOL: Any = {"name": "lookup", "description": "Look something up",
                 "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}


class Proxy:
    """Translates each call for the mock's other dialect; ``canned`` replaces the upstream."""

    def __init__(self, upstream: str, session: aiohttp.ClientSession) -> None:
        self.upstream = upstream
        self.session = session
        self.url = ""
        self.canned: bytes | None = None  # raw upstream SSE to translate instead of calling

    async def fetch(self, path: str, body: dict[str, Any], request: web.Request,
                    ) -> tuple[int, bytes]:
        if self.canned is not None:
            return 200, self.canned
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-mock-")}
        async with self.session.post(self.upstream + path, data=orjson.dumps(body),
                                     headers={"content-type": "application/json", **headers},
                                     ) as resp:
            return resp.status, await resp.read()

    async def stream(self, request: web.Request, raw: bytes,
                     translator: MessagesToChatStream | ChatToMessagesStream,
                     ) -> web.StreamResponse:
        """Relay in 7-byte network chunks, so events arrive split at odd places."""
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        splitter = EventSplitter()
        for i in range(0, len(raw), 7):
            out = translator.feed(splitter.feed(raw[i:i + 7]))
            if out:
                await resp.write(out)
        await resp.write(translator.finish())
        await resp.write_eof()
        return resp

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """OpenAI client -> Anthropic upstream."""
        body = orjson.loads(await request.read())
        try:
            upstream = chat_to_messages(body, "mock-claude")
        except TranslationError as exc:
            return web.json_response({"error": {"message": exc.message, "param": exc.param,
                                                "type": "invalid_request_error", "code": None}},
                                     status=400)
        status, raw = await self.fetch("/v1/messages", upstream, request)
        if status >= 400:
            return web.Response(status=status, body=error_to_openai(status, raw),
                                content_type="application/json")
        if upstream.get("stream"):
            include = (body.get("stream_options") or {}).get("include_usage") is True
            return await self.stream(request, raw, MessagesToChatStream(body["model"], include))
        return web.json_response(messages_response_to_chat(orjson.loads(raw), body["model"]),
                                 dumps=lambda v: orjson.dumps(v).decode())

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic client -> OpenAI upstream."""
        body = orjson.loads(await request.read())
        try:
            upstream = messages_to_chat(body, "mock-gpt")
        except TranslationError as exc:
            return web.json_response({"type": "error", "error": {
                "type": "invalid_request_error", "message": exc.message}}, status=400)
        status, raw = await self.fetch("/v1/chat/completions", upstream, request)
        if status >= 400:
            return web.Response(status=status, body=error_to_anthropic(status, raw),
                                content_type="application/json")
        if upstream.get("stream"):
            return await self.stream(request, raw, ChatToMessagesStream(body["model"], 1000))
        return web.json_response(chat_response_to_messages(orjson.loads(raw), body["model"]),
                                 dumps=lambda v: orjson.dumps(v).decode())


@pytest.fixture
async def mock() -> AsyncIterator[MockProvider]:
    provider = MockProvider(MockSettings(chunks=5))
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture
async def proxy(mock: MockProvider) -> AsyncIterator[Proxy]:
    async with aiohttp.ClientSession() as session:
        p = Proxy(mock.base_url, session)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", p.chat)
        app.router.add_post("/v1/messages", p.messages)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        p.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield p
        await runner.cleanup()


def oai(proxy: Proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0)


def ant(proxy: Proxy) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.url, api_key="k", max_retries=0)


# -- OpenAI SDK, Anthropic upstream ------------------------------------------------------------


async def test_openai_create_non_stream(proxy: Proxy, mock: MockProvider) -> None:
    async with oai(proxy) as client:
        r = await client.chat.completions.create(
            model="gpt-4o", max_tokens=50, tools=[OAI_TOOL], tool_choice="required",
            messages=[{"role": "system", "content": "Be terse."},
                      {"role": "user", "content": QUESTION}])
    upstream = mock.requests[-1].json
    assert upstream["system"] == "Be terse." and upstream["tool_choice"] == {"type": "any"}
    assert r.model == "gpt-4o" and r.choices[0].finish_reason == "tool_calls"
    call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "lookup"  # type: ignore[union-attr]
    assert orjson.loads(call.function.arguments) == ARGS  # type: ignore[union-attr]
    assert r.usage is not None and r.usage.completion_tokens == mock_token_count(
        orjson.dumps(ARGS).decode())


async def test_openai_stream_create_accumulates_tool_call(proxy: Proxy) -> None:
    async with oai(proxy) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": QUESTION}], tools=[OAI_TOOL],
            stream=True, stream_options={"include_usage": True})
        chunks = [c async for c in stream]
    assert {c.model for c in chunks} == {"gpt-4o"} and len({c.id for c in chunks}) == 1
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                   for tc in c.choices[0].delta.tool_calls or () if tc.function)
    assert orjson.loads(args) == ARGS
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])


async def test_openai_stream_helper_final_completion(proxy: Proxy) -> None:
    async with oai(proxy) as client, client.chat.completions.stream(
            model="gpt-4o", messages=[{"role": "user", "content": QUESTION}], tools=[OAI_TOOL],
            stream_options={"include_usage": True}) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in kinds
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "lookup" and call.function.parsed_arguments == ARGS
    assert final.usage is not None and final.usage.prompt_tokens > 0


async def test_openai_stream_helper_text_and_length(proxy: Proxy) -> None:
    async with oai(proxy) as client:
        async with client.chat.completions.stream(
                model="gpt-4o", messages=[{"role": "user", "content": QUESTION}]) as stream:
            final = await stream.get_final_completion()
        assert final.choices[0].message.content == (
            "This is tollway's demo model answering: " + QUESTION)
        assert final.choices[0].finish_reason == "stop" and final.usage is None
        # The helper raises on "length" (as with OpenAI itself), so iterate the raw stream.
        stream = await client.chat.completions.create(
            model="gpt-4o", max_completion_tokens=3, stream=True,
            messages=[{"role": "user", "content": QUESTION}])
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "This is tollway's"
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_openai_stream_of_parallel_tool_calls(proxy: Proxy) -> None:
    """Thinking, text and two tool_use blocks: tool_calls indexed 0 and 1, not 2 and 3."""
    def ev(payload: dict[str, Any]) -> bytes:
        return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def block(i: int, **b: Any) -> bytes:
        return ev({"type": "content_block_start", "index": i, "content_block": b})

    def delta(i: int, **d: Any) -> bytes:
        return ev({"type": "content_block_delta", "index": i, "delta": d})

    proxy.canned = b"".join([
        ev({"type": "message_start", "message": {
            "id": "msg_x", "type": "message", "role": "assistant", "model": "m", "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1, "cache_read_input_tokens": 7}}}),
        block(0, type="thinking", thinking=""), delta(0, type="thinking_delta", thinking="hm"),
        ev({"type": "content_block_stop", "index": 0}),
        block(1, type="text", text=""), delta(1, type="text_delta", text="On it."),
        ev({"type": "content_block_stop", "index": 1}),
        block(2, type="tool_use", id="toolu_1", name="lookup", input={}),
        delta(2, type="input_json_delta", partial_json='{"query":'),
        delta(2, type="input_json_delta", partial_json=' "Paris"}'),
        ev({"type": "content_block_stop", "index": 2}),
        block(3, type="tool_use", id="toolu_2", name="lookup", input={}),
        delta(3, type="input_json_delta", partial_json='{"query": "Rome"}'),
        ev({"type": "content_block_stop", "index": 3}),
        ev({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 30}}),
        ev({"type": "message_stop"})])
    async with oai(proxy) as client, client.chat.completions.stream(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], tools=[OAI_TOOL],
            stream_options={"include_usage": True}) as stream:
        final = await stream.get_final_completion()
    msg = final.choices[0].message
    assert msg.content == "On it."
    assert [(c.id, c.function.parsed_arguments) for c in msg.tool_calls or ()] == [
        ("toolu_1", {"query": "Paris"}), ("toolu_2", {"query": "Rome"})]
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (10, 30)
    assert final.usage.prompt_tokens_details.cached_tokens == 7  # type: ignore[union-attr]


async def test_openai_errors(proxy: Proxy) -> None:
    async with oai(proxy) as client:
        with pytest.raises(openai.RateLimitError) as rate:
            await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                extra_headers={"x-mock-status": "429"})
        assert "Injected failure with status 429" in rate.value.message
        assert rate.value.code == "rate_limit_error"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(
                model="gpt-4o", n=2, messages=[{"role": "user", "content": "x"}])
        assert bad.value.param == "n"
        proxy.canned = (b'event: message_start\ndata: {"type":"message_start","message":'
                        b'{"id":"msg_e","usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
                        b'event: error\ndata: {"type":"error","error":'
                        b'{"type":"overloaded_error","message":"Overloaded"}}\n\n')
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True)
        with pytest.raises(openai.APIError, match="Overloaded"):
            async for _ in stream:
                pass


# -- Anthropic SDK, OpenAI upstream ------------------------------------------------------------


async def test_anthropic_create_non_stream(proxy: Proxy, mock: MockProvider) -> None:
    async with ant(proxy) as client:
        m = await client.messages.create(
            model="claude-sonnet", max_tokens=64, system=[{"type": "text", "text": "Terse."}],
            tools=[ANT_TOOL], tool_choice={"type": "tool", "name": "lookup"},
            messages=[{"role": "user", "content": QUESTION}])
    upstream = mock.requests[-1].json
    assert upstream["messages"][0] == {"role": "system", "content": "Terse."}
    assert upstream["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert m.model == "claude-sonnet" and m.stop_reason == "tool_use"
    block = m.content[0]
    assert block.type == "tool_use" and block.name == "lookup" and block.input == ARGS
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


async def test_anthropic_stream_tool_use(proxy: Proxy) -> None:
    async with ant(proxy) as client, client.messages.stream(
            model="claude-sonnet", max_tokens=64, tools=[ANT_TOOL],
            messages=[{"role": "user", "content": QUESTION}]) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "input_json" in kinds
    assert final.model == "claude-sonnet" and final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "name", None), getattr(b, "input", None))
            for b in final.content] == [("tool_use", "lookup", ARGS)]
    assert final.usage.output_tokens == mock_token_count(orjson.dumps(ARGS).decode())
    assert final.usage.input_tokens > 0 and final.usage.input_tokens != 1000  # upstream's count


async def test_anthropic_stream_text_and_tool_round_trip(proxy: Proxy, mock: MockProvider,
                                                         ) -> None:
    """A second turn carrying tool_use/tool_result gets a text answer, streamed."""
    messages: Any = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "lookup",
                                           "input": ARGS}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                      "content": "Paris"}]}]
    async with ant(proxy) as client, client.messages.stream(
            model="claude-sonnet", max_tokens=64, tools=[ANT_TOOL],
            messages=messages) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    sent = mock.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert text == "This is tollway's demo model answering: " + QUESTION
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"


async def test_anthropic_stream_without_upstream_usage(proxy: Proxy) -> None:
    async with ant(proxy) as client, client.messages.stream(
            model="claude-sonnet", max_tokens=5, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-no-usage": "1"}) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert final.usage.input_tokens == 1000 and final.usage.output_tokens > 0  # estimates


async def test_anthropic_errors(proxy: Proxy) -> None:
    async with ant(proxy) as client:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            await client.messages.create(
                model="claude-sonnet", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                extra_headers={"x-mock-status": "401"})
        assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError, match="server tools"):
            await client.messages.create(
                model="claude-sonnet", max_tokens=5, messages=[{"role": "user", "content": "x"}],
                tools=[{"type": "web_search_20250305", "name": "web_search"}])
        proxy.canned = (b'data: {"id":"chatcmpl-e","object":"chat.completion.chunk","created":1,'
                        b'"model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
                        b'data: {"error":{"message":"The server had an error",'
                        b'"type":"server_error","param":null,"code":null}}\n\n')
        with pytest.raises(anthropic.APIStatusError, match="The server had an error"):
            async with client.messages.stream(
                    model="claude-sonnet", max_tokens=5,
                    messages=[{"role": "user", "content": "x"}]) as stream:
                await stream.get_final_message()
