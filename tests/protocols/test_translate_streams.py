"""Stream translation, event by event: shapes, ordering, and independence from chunking."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tollway.protocols.sse import EventSplitter, event_data, events
from tollway.protocols.translate import ChatToMessagesStream, MessagesToChatStream

Translator = MessagesToChatStream | ChatToMessagesStream


def ant(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def oai(payload: dict[str, Any] | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


def anthropic_stream(*, stop: str = "tool_use", end: bool = True) -> list[bytes]:
    """Thinking, text, then two tool calls, as the Messages API streams them."""
    def delta(index: int, **d: Any) -> bytes:
        return ant({"type": "content_block_delta", "index": index, "delta": d})

    evs = [
        ant({"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 50,
                      "cache_creation_input_tokens": 5}}}),
        ant({"type": "content_block_start", "index": 0,
             "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ant({"type": "ping"}),
        delta(0, type="thinking_delta", thinking="Let me think"),
        delta(0, type="signature_delta", signature="abc"),
        ant({"type": "content_block_stop", "index": 0}),
        ant({"type": "content_block_start", "index": 1,
             "content_block": {"type": "text", "text": ""}}),
        delta(1, type="text_delta", text="Checking "),
        delta(1, type="text_delta", text="both \u00e9\"cities\"."),
        ant({"type": "content_block_stop", "index": 1}),
        ant({"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}}}),
        delta(2, type="input_json_delta", partial_json=""),
        delta(2, type="input_json_delta", partial_json='{"city": "Pa'),
        delta(2, type="input_json_delta", partial_json='ris"}'),
        ant({"type": "content_block_stop", "index": 2}),
        ant({"type": "content_block_start", "index": 3, "content_block": {
            "type": "tool_use", "id": "toolu_b", "name": "clock", "input": {}}}),
        ant({"type": "content_block_stop", "index": 3}),
        ant({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
             "usage": {"output_tokens": 42}}),
    ]
    if end:
        evs.append(ant({"type": "message_stop"}))
    return evs


def openai_stream(*, usage: bool = True, done: bool = True) -> list[bytes]:
    """Text, then two tool calls, then the include_usage chunk, as OpenAI streams them."""
    base = {"id": "chatcmpl-77", "object": "chat.completion.chunk", "created": 5, "model": "gpt",
            "system_fingerprint": "fp"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        c: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                  "finish_reason": finish}]}
        if usage:
            c["usage"] = None
        return oai(c)

    def call(i: int, **kw: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": i, **kw}]}

    evs = [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        chunk({"content": "Checking "}),
        chunk({"content": "both."}),
        chunk(call(0, id="call_a", type="function",
                   function={"name": "weather", "arguments": ""})),
        chunk(call(0, function={"arguments": '{"city":'})),
        chunk(call(0, function={"arguments": '"Paris"}'})),
        chunk(call(1, id="call_b", type="function",
                   function={"name": "clock", "arguments": "{}"})),
        chunk({}, "tool_calls"),
    ]
    if usage:
        evs.append(oai({**base, "choices": [], "usage": {
            "prompt_tokens": 130, "completion_tokens": 21, "total_tokens": 151,
            "prompt_tokens_details": {"cached_tokens": 100}}}))
    if done:
        evs.append(oai("[DONE]"))
    return evs


def parse(out: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) of each output event; [DONE] stays a string."""
    parsed = []
    for ev in events(out):
        name, data = event_data(ev)
        parsed.append((name.decode() if name else None,
                       data.decode() if data == b"[DONE]" else orjson.loads(data)))
    return parsed


def run(make: Callable[[], Translator], evs: list[bytes], mode: str) -> bytes:
    """Translate a stream grouped in different ways; the output must not depend on it."""
    t = make()
    if mode == "whole":
        out = t.feed(b"".join(evs))
    elif mode == "each":
        out = b"".join(t.feed(e) for e in evs)
    else:  # network-style: arbitrary chunks through the gateway's splitter
        raw = b"".join(evs)
        cuts = list(range(1, len(raw))) if mode == "bytes" else [int(mode)]
        splitter = EventSplitter()
        pieces, start = [], 0
        for cut in [*cuts, len(raw)]:
            pieces.append(t.feed(splitter.feed(raw[start:cut])) if raw[start:cut] else b"")
            start = cut
        out = b"".join(pieces)
    return out + t.finish()


# -- Anthropic upstream -> OpenAI client -------------------------------------------------------


def to_chat(include_usage: bool = True) -> MessagesToChatStream:
    return MessagesToChatStream("gpt-4o", include_usage, created=1700000000)


def test_messages_to_chat_stream_shape() -> None:
    out = parse(run(to_chat, anthropic_stream(), "whole"))
    assert all(name is None for name, _ in out) and out[-1][1] == "[DONE]"
    chunks = [d for _, d in out[:-1]]
    for c in chunks:
        assert c["id"] == "chatcmpl-msg_01" and c["object"] == "chat.completion.chunk"
        assert c["model"] == "gpt-4o" and c["created"] == 1700000000
    assert all(c["usage"] is None for c in chunks[:-1])
    deltas = [c["choices"][0]["delta"] for c in chunks[:-2]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Checking "},
        {"content": "both \u00e9\"cities\"."},
        {"tool_calls": [{"index": 0, "id": "toolu_a", "type": "function",
                         "function": {"name": "weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]},
        {"tool_calls": [{"index": 1, "id": "toolu_b", "type": "function",
                         "function": {"name": "clock", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},  # no-argument tool
    ]
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "logprobs": None,
                                      "finish_reason": "tool_calls"}]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 67, "completion_tokens": 42,
                                   "total_tokens": 109, "prompt_tokens_details": {
                                       "cached_tokens": 50}}


def test_messages_to_chat_without_include_usage() -> None:
    out = parse(run(lambda: to_chat(False), anthropic_stream(stop="max_tokens"), "whole"))
    chunks = [d for _, d in out[:-1]]
    assert all("usage" not in c and c["choices"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("mode", ["each", "bytes", "7", "700"])
def test_messages_to_chat_independent_of_chunking(mode: str) -> None:
    evs = anthropic_stream()
    assert run(to_chat, evs, mode) == run(to_chat, evs, "whole")


def test_messages_to_chat_error_event() -> None:
    t = to_chat()
    out = t.feed(b"".join(anthropic_stream()[:8]) + ant({"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}))
    assert parse(out)[-1] == (None, {"error": {"message": "Overloaded",
                                               "type": "service_unavailable", "param": None,
                                               "code": "overloaded_error"}})
    assert t.finished and t.feed(ant({"type": "message_stop"})) == b"" and t.finish() == b""


def test_messages_to_chat_finish() -> None:
    t = to_chat()
    t.feed(b"".join(anthropic_stream(end=False)))  # message_stop lost
    tail = parse(t.finish())
    assert tail[0][1]["choices"] == [] and tail[-1][1] == "[DONE]" and t.finished
    cut = to_chat()
    cut.feed(b"".join(anthropic_stream()[:9]))  # cut mid-text: the caller reports the error
    assert cut.finish() == b"" and not cut.finished
    done = to_chat()
    done.feed(b"".join(anthropic_stream()))
    assert done.finished and done.finish() == b""


def test_messages_to_chat_crlf_and_data_only_events() -> None:
    evs = [e.split(b"\n", 1)[1].replace(b"\n", b"\r\n") for e in anthropic_stream()]
    assert run(to_chat, evs, "whole") == run(to_chat, anthropic_stream(), "whole")


# -- OpenAI upstream -> Anthropic client -------------------------------------------------------


def to_messages() -> ChatToMessagesStream:
    return ChatToMessagesStream("claude-sonnet", input_tokens=99)


def test_chat_to_messages_stream_shape() -> None:
    out = parse(run(to_messages, openai_stream(), "whole"))
    assert all(name == data["type"] for name, data in out)
    assert [d["type"] for _, d in out] == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    start = out[0][1]["message"]
    assert start["id"] == "msg_77" and start["model"] == "claude-sonnet"
    assert start["usage"]["input_tokens"] == 99 and start["content"] == []
    blocks = [d for _, d in out if d["type"] == "content_block_start"]
    assert [b["index"] for b in blocks] == [0, 1, 2]
    assert [b["content_block"] for b in blocks] == [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "call_a", "name": "weather", "input": {}},
        {"type": "tool_use", "id": "call_b", "name": "clock", "input": {}}]
    deltas = [(d["index"], d["delta"]) for _, d in out if d["type"] == "content_block_delta"]
    assert deltas == [
        (0, {"type": "text_delta", "text": "Checking "}),
        (0, {"type": "text_delta", "text": "both."}),
        (1, {"type": "input_json_delta", "partial_json": '{"city":'}),
        (1, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
        (2, {"type": "input_json_delta", "partial_json": "{}"})]
    assert out[-2][1] == {"type": "message_delta",
                          "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": {"input_tokens": 30, "output_tokens": 21,
                                    "cache_creation_input_tokens": 0,
                                    "cache_read_input_tokens": 100}}


@pytest.mark.parametrize("mode", ["each", "bytes", "5", "900"])
def test_chat_to_messages_independent_of_chunking(mode: str) -> None:
    evs = openai_stream()
    assert run(to_messages, evs, mode) == run(to_messages, evs, "whole")


def test_chat_to_messages_waits_for_usage_after_finish() -> None:
    t = to_messages()
    evs = openai_stream()
    before = parse(t.feed(b"".join(evs[:-2])))  # through the finish_reason chunk
    assert before[-1][1]["type"] == "content_block_stop"
    after = parse(t.feed(evs[-2]))
    assert [d["type"] for _, d in after] == ["message_delta", "message_stop"]
    assert t.finished and t.feed(evs[-1]) == b""


@pytest.mark.parametrize("done", [True, False])
def test_chat_to_messages_without_usage_chunk(done: bool) -> None:
    t = to_messages()
    out = t.feed(b"".join(openai_stream(usage=False, done=done)))
    assert t.finished is done
    out += t.finish()
    parsed = parse(out)
    assert [d["type"] for _, d in parsed[-2:]] == ["message_delta", "message_stop"]
    usage = parsed[-2][1]["usage"]
    assert set(usage) == {"output_tokens"} and usage["output_tokens"] > 0
    assert t.finished and t.finish() == b""


def test_chat_to_messages_truncated_and_error() -> None:
    cut = to_messages()
    cut.feed(b"".join(openai_stream()[:3]))
    assert cut.finish() == b"" and not cut.finished
    t = to_messages()
    out = t.feed(b"".join(openai_stream()[:2]) + oai({"error": {
        "message": "The server had an error", "type": "server_error", "param": None,
        "code": None}}))
    assert parse(out)[-1] == ("error", {"type": "error", "error": {
        "type": "api_error", "message": "The server had an error"}})
    assert t.finished and t.finish() == b""


def test_chat_to_messages_stop_with_tool_calls_and_empty_stream() -> None:
    evs = openai_stream()
    evs[7] = evs[7].replace(b'"tool_calls"}', b'"stop"}')  # servers that say "stop"
    assert b'"finish_reason":"stop"' in evs[7]
    out = parse(run(to_messages, evs, "whole"))
    assert out[-2][1]["delta"]["stop_reason"] == "tool_use"
    empty = parse(run(to_messages, [oai("[DONE]")], "whole"))
    assert [d["type"] for _, d in empty] == ["message_start", "message_delta", "message_stop"]
    assert empty[1][1]["delta"]["stop_reason"] == "end_turn"
