"""What lineage reads of a conversation: fingerprints that survive quoting and wrapping,
the keys a tool call is found by, and the tool calls a stream makes in each dialect."""

from __future__ import annotations

import orjson

from tollway.protocols import conversation as c
from tollway.protocols.answers import ToolCallCapture

ANSWER = ("The invoice total for order 4471 is $1,240.50 including tax. "
          "Shipping was charged twice, once on each parcel!")


def test_a_quoted_or_wrapped_sentence_keeps_its_fingerprint() -> None:
    said = set(c.fingerprints([ANSWER]))
    assert len(said) == 2
    for wrapped in (f"Please verify: {ANSWER}", f"> {ANSWER}", f'"{ANSWER}"',
                    ANSWER.replace(" is ", "  is\t"), ANSWER.upper(),
                    f"B said:\n{ANSWER}\nIs that right?"):
        assert said <= set(c.fingerprints([wrapped])), wrapped


def test_short_sentences_and_other_text_give_nothing_in_common() -> None:
    assert c.fingerprints(["Thanks. Sure! OK: done."]) == []
    other = "The invoice total for order 4472 is $1,240.50 including tax."
    assert not set(c.fingerprints([other])) & set(c.fingerprints([ANSWER]))


def test_fingerprints_are_bounded_and_hold_no_text() -> None:
    long = " ".join(f"Sentence number {i} says something of its own." for i in range(100))
    prints = c.fingerprints([long])
    assert len(prints) == c.MAX_FINGERPRINTS
    assert all(p.startswith("f") and len(p) == 17 for p in prints)


def test_a_call_is_found_by_its_arguments_however_they_are_spelled() -> None:
    model = c.tool_keys("get_weather", '{"city": "Paris", "days": 3}')
    assert c.tool_keys("get_weather", {"days": "3", "city": "Paris"}) == model  # query string
    gateway = c.tool_keys("weather", {"city": "Paris", "days": 3})  # another name
    assert gateway[1] == model[1] and gateway[0] != model[0]
    assert c.tool_keys("get_weather", {"city": "Oslo", "days": 3})[1] != model[1]
    assert c.tool_keys("x", "not json") == [] and c.tool_keys("x", {}) == []
    assert c.tool_keys("x", [1, 2]) == []


def test_argument_texts_are_the_long_strings_anywhere_in_them() -> None:
    args = {"task": "Research the European e-bike market in depth", "n": 5,
            "context": {"notes": ["short", "Compare the five largest brands by revenue"]}}
    assert c.argument_texts(orjson.dumps(args).decode()) == [
        "Research the European e-bike market in depth",
        "Compare the five largest brands by revenue"]
    assert c.argument_texts("{broken") == []


def sse(*events: dict[str, object]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)


def test_openai_chat_deltas_are_put_together_per_call() -> None:
    cap = ToolCallCapture()
    start = [{"index": 0, "id": "call_a", "function": {"name": "search", "arguments": ""}},
             {"index": 1, "id": "call_b", "function": {"name": "fetch", "arguments": "{"}}]
    cap.scan(sse({"choices": [{"index": 0, "delta": {"tool_calls": start}}]}))
    cap.scan(sse({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": '{"q": "e-bikes"}'}},
        {"index": 1, "function": {"arguments": '"url": "x"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {"content": "no tool here"}}]}))
    assert cap.names == ["search", "fetch"] and cap.ids == ["call_a", "call_b"]
    assert cap.arguments() == [("search", '{"q": "e-bikes"}'), ("fetch", '{"url": "x"}')]


def test_anthropic_input_json_deltas_and_responses_items() -> None:
    cap = ToolCallCapture()
    cap.scan(sse({"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {
            "type": "input_json_delta", "partial_json": '{"id": '}}))
    cap.scan(sse({"type": "content_block_delta", "index": 1, "delta": {
        "type": "input_json_delta", "partial_json": "7}"}},
        {"type": "content_block_delta", "index": 0, "delta": {
            "type": "text_delta", "text": "input_json_delta"}}))
    assert cap.arguments() == [("lookup", '{"id": 7}')] and cap.ids == ["toolu_1"]
    resp = ToolCallCapture()
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_9", "name": "lookup",
            "arguments": ""}
    resp.scan(sse({"type": "response.output_item.added", "item": item}))
    resp.scan(sse({"type": "response.output_item.done",
                   "item": {**item, "arguments": '{"id": 9}'}}))
    assert resp.arguments() == [("lookup", '{"id": 9}')] and resp.ids == ["call_9"]
