"""Response and error translation between OpenAI chat and Anthropic Messages."""

from __future__ import annotations

from typing import Any

import anthropic.types
import openai.types.chat
import orjson
import pytest

from tollway.protocols.translate import (
    chat_response_to_messages,
    error_to_anthropic,
    error_to_openai,
    messages_response_to_chat,
)

# -- responses ---------------------------------------------------------------------------------


def anthropic_message(**over: Any) -> dict[str, Any]:
    msg = {"id": "msg_01abc", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
           "content": [{"type": "thinking", "thinking": "...", "signature": "s"},
                       {"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}],
           "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 100,
                     "cache_creation_input_tokens": 20}}
    msg.update(over)
    return msg


def test_messages_response_to_chat_text_and_cache_usage() -> None:
    out = messages_response_to_chat(anthropic_message(), "gpt-4o")
    c = openai.types.chat.ChatCompletion.model_validate(out)
    assert c.id == "chatcmpl-msg_01abc" and c.model == "gpt-4o"
    assert c.choices[0].message.content == "Hello there"
    assert c.choices[0].message.tool_calls is None
    assert c.choices[0].finish_reason == "stop"
    assert c.usage is not None
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (130, 4,
                                                                                       134)
    assert c.usage.prompt_tokens_details is not None
    assert c.usage.prompt_tokens_details.cached_tokens == 100


def test_messages_response_to_chat_tool_calls() -> None:
    out = messages_response_to_chat(anthropic_message(content=[
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "a"}},
        {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {"q": "b"}}],
        stop_reason="tool_use"), "gpt-4o")
    msg = openai.types.chat.ChatCompletion.model_validate(out).choices[0].message
    assert msg.content is None and msg.tool_calls is not None
    assert [(t.id, t.function.name, orjson.loads(t.function.arguments))  # type: ignore[union-attr]
            for t in msg.tool_calls] == [("toolu_1", "lookup", {"q": "a"}),
                                         ("toolu_2", "lookup", {"q": "b"})]
    assert out["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("pause_turn", "stop")])
def test_stop_reason_to_finish_reason(stop: str, finish: str) -> None:
    out = messages_response_to_chat(anthropic_message(stop_reason=stop), "g")
    assert out["choices"][0]["finish_reason"] == finish


def chat_completion(**over: Any) -> dict[str, Any]:
    resp = {"id": "chatcmpl-xyz", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": {
                "role": "assistant", "content": "Hi!", "refusal": None}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127,
                      "prompt_tokens_details": {"cached_tokens": 100}}}
    resp.update(over)
    return resp


def test_chat_response_to_messages_text_and_cached_usage() -> None:
    out = chat_response_to_messages(chat_completion(), "claude-sonnet")
    m = anthropic.types.Message.model_validate(out)
    assert m.id == "msg_xyz" and m.model == "claude-sonnet" and m.stop_reason == "end_turn"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == "Hi!"  # type: ignore[union-attr]
    assert (m.usage.input_tokens, m.usage.output_tokens, m.usage.cache_read_input_tokens) == (
        20, 7, 100)


def test_chat_response_to_messages_tool_calls() -> None:
    out = chat_response_to_messages(chat_completion(choices=[{
        "index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "lookup", "arguments": '{"q":"x"}'}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "lookup", "arguments": "oops"}}]}}]), "claude")
    m = anthropic.types.Message.model_validate(out)
    assert m.stop_reason == "tool_use"
    assert [(b.id, b.name, b.input) for b in m.content] == [  # type: ignore[union-attr]
        ("call_a", "lookup", {"q": "x"}), ("call_b", "lookup", {"_raw": "oops"})]


@pytest.mark.parametrize(("finish", "stop"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
    ("function_call", "tool_use"), ("content_filter", "refusal")])
def test_finish_reason_to_stop_reason(finish: str, stop: str) -> None:
    resp = chat_completion()
    resp["choices"][0]["finish_reason"] = finish
    assert chat_response_to_messages(resp, "c")["stop_reason"] == stop


# -- errors ------------------------------------------------------------------------------------


def test_anthropic_error_to_openai() -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "overloaded_error",
                                                    "message": "Overloaded"}})
    out = orjson.loads(error_to_openai(529, body))
    assert out == {"error": {"message": "Overloaded", "type": "service_unavailable",
                             "param": None, "code": "overloaded_error"}}
    bad = orjson.loads(error_to_openai(400, orjson.dumps({"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: too big"}})))
    assert bad["error"]["message"] == "max_tokens: too big"
    assert bad["error"]["type"] == "invalid_request_error"


def test_openai_error_to_anthropic() -> None:
    body = orjson.dumps({"error": {"message": "Rate limit reached", "type": "requests",
                                   "param": None, "code": "rate_limit_exceeded"}})
    assert orjson.loads(error_to_anthropic(429, body)) == {
        "type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}}
    auth = orjson.loads(error_to_anthropic(401, orjson.dumps({"error": {
        "message": "Incorrect API key", "type": "invalid_request_error",
        "code": "invalid_api_key"}})))
    assert auth["error"] == {"type": "authentication_error", "message": "Incorrect API key"}


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"", b"[1]",
                                  b'{"unexpected": true}'])
def test_non_json_errors_get_a_generic_message(body: bytes) -> None:
    oai = orjson.loads(error_to_openai(502, body))["error"]
    assert "502" in oai["message"] and oai["type"] == "upstream_error"
    ant = orjson.loads(error_to_anthropic(502, body))["error"]
    assert "502" in ant["message"] and ant["type"] == "api_error"


def test_loose_error_shapes_keep_their_text() -> None:
    assert orjson.loads(error_to_anthropic(400, b'{"error": "model not loaded"}'))["error"][
        "message"] == "model not loaded"
    assert orjson.loads(error_to_anthropic(422, b'{"detail": "bad field"}'))["error"] == {
        "type": "invalid_request_error", "message": "bad field"}

