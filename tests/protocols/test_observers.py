"""Stream observers: usage, produced text and the stripped usage chunk, however the bytes
arrive (split anywhere, CRLF, spaced JSON)."""

from __future__ import annotations

import json

import orjson
import pytest

from tollway.protocols.anthropic import MessagesObserver
from tollway.protocols.openai import ChatObserver, ResponsesObserver
from tollway.protocols.sse import EventSplitter, TextCapture


def chat_stream(spaced: bool = False, usage: bool = True) -> bytes:
    dumps = (lambda o: json.dumps(o).encode()) if spaced else orjson.dumps
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = [b"data: " + dumps({**base, "choices": [{"index": 0, "delta": {
        "role": "assistant", "content": ""}}], "usage": None}) + b"\n\n"]
    for piece in ["Hel", "lo \"wo", "rld\" \u00e9\n", "\U0001f600"]:
        out.append(b"data: " + dumps({**base, "choices": [{"index": 0, "delta": {
            "content": piece}}], "usage": None}) + b"\n\n")
    out.append(b"data: " + dumps({**base, "choices": [{"index": 0, "delta": {},
                                                       "finish_reason": "stop"}],
                                  "usage": None}) + b"\n\n")
    if usage:
        out.append(b"data: " + dumps({**base, "choices": [], "usage": {
            "prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
            "prompt_tokens_details": {"cached_tokens": 2}}}) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def run(observer: object, stream: bytes, cut: int) -> bytes:
    splitter = EventSplitter()
    out = b""
    for i in range(0, len(stream), cut):
        blob = splitter.feed(stream[i:i + cut])
        if blob:
            out += observer.feed(blob)  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("cut", [1, 7, 64, 10_000])
@pytest.mark.parametrize("spaced", [False, True])
def test_chat_usage_text_and_strip(cut: int, spaced: bool) -> None:
    stream = chat_stream(spaced)
    obs = ChatObserver(strip_usage=True)
    out = run(obs, stream, cut)
    assert obs.usage is not None and (obs.usage.input, obs.usage.cached, obs.usage.output) == (
        10, 2, 7)
    assert obs.finished and obs.saw_content
    assert obs.text() == 'Hello "world" \u00e9\n\U0001f600'
    assert b'"usage"' not in out  # neither the usage chunk nor the null fields
    assert out.endswith(b"data: [DONE]\n\n") and out.count(b"\n\n") == 7
    keep = ChatObserver(strip_usage=False)
    assert run(keep, stream, cut) == stream and keep.usage is not None


def test_crlf_streams() -> None:
    obs = ChatObserver(strip_usage=False)
    run(obs, chat_stream().replace(b"\n", b"\r\n"), 13)
    assert obs.usage is not None and obs.finished


def test_stream_without_usage_keeps_text_for_counting() -> None:
    obs = ChatObserver(strip_usage=True)
    run(obs, chat_stream(usage=False), 5)
    assert obs.usage is None and not obs.usage_final
    assert obs.text().startswith("Hello")


def test_tool_call_arguments_are_text() -> None:
    base = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {
        "tool_calls": [{"index": 0, "function": {"arguments": '{"q": "x"}'}}]}}]}
    obs = ChatObserver(strip_usage=False)
    obs.feed(b"data: " + orjson.dumps(base) + b"\n\n")
    assert obs.text() == '{"q": "x"}' and obs.saw_content


def anthropic_stream(complete: bool = True) -> bytes:
    evs = [("message_start", {"type": "message_start", "message": {
        "id": "m", "content": [], "usage": {"input_tokens": 25, "output_tokens": 1,
                                            "cache_read_input_tokens": 5}}}),
           ("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "text", "text": ""}}),
           ("ping", {"type": "ping"}),
           ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": "Bonjour"}}),
           ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": " monde"}})]
    if complete:
        evs += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                   "usage": {"output_tokens": 9}}),
                ("message_stop", {"type": "message_stop"})]
    return b"".join(b"event: " + n.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n"
                    for n, d in evs)


@pytest.mark.parametrize("cut", [3, 50, 10_000])
def test_anthropic_usage(cut: int) -> None:
    obs = MessagesObserver()
    assert run(obs, anthropic_stream(), cut) == anthropic_stream()
    assert obs.usage_final and obs.finished
    assert (obs.usage.input, obs.usage.cached, obs.usage.output) == (25, 5, 9)  # type: ignore[union-attr]
    cut_short = MessagesObserver()
    run(cut_short, anthropic_stream(complete=False), cut)
    assert not cut_short.usage_final and cut_short.usage.input == 25  # type: ignore[union-attr]
    assert cut_short.text() == "Bonjour monde"


def test_responses_usage() -> None:
    evs = [{"type": "response.output_text.delta", "delta": "Hi", "sequence_number": 1},
           {"type": "response.completed", "sequence_number": 2, "response": {
               "usage": {"input_tokens": 8, "output_tokens": 3,
                         "input_tokens_details": {"cached_tokens": 0}}}}]
    blob = b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
                    for e in evs)
    obs = ResponsesObserver()
    run(obs, blob, 11)
    assert obs.finished and obs.usage is not None and obs.usage.output == 3
    assert obs.text() == "Hi"


def test_text_capture_tolerates_bad_escapes() -> None:
    cap = TextCapture(("content",))
    cap.scan(b'{"content":"a\\qb"}')
    assert cap.text() == "a\\qb"


def test_crlf_events_split_between_reads_stay_apart() -> None:
    from tollway.protocols.sse import EventSplitter, events

    raw = b'data: {"a": 1}\r\n\r\ndata: {"b": 2}\r\n\r\n'
    for cut in range(1, len(raw)):
        sp = EventSplitter()
        out = sp.feed(raw[:cut]) + sp.feed(raw[cut:])
        assert events(out) == [b'data: {"a": 1}', b'data: {"b": 2}'], cut
