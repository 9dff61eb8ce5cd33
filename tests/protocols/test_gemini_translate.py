"""Chat <-> Gemini translation on its own: the request fields, answers, finish reasons,
usage, errors and the stream converter fed in arbitrary network pieces."""

from __future__ import annotations

import orjson
import pytest

from tollway.protocols.translate.errors import TranslationError
from tollway.protocols.translate.gemini_answers import (
    GeminiToChatStream,
    gemini_error_to_openai,
    gemini_to_chat,
    usage,
)
from tollway.protocols.translate.gemini_requests import chat_to_gemini


def test_images_tool_results_and_turn_merging() -> None:
    req = chat_to_gemini({"messages": [
        {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "image_url", "image_url": {"url": "https://x.test/cat.webp?s=1"}}]},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "g",
                                                         "arguments": "{\"x\": 1}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "plain text"},
        {"role": "tool", "tool_call_id": "b", "content": "{\"ok\": true}"}]})
    assert req["systemInstruction"] == {"parts": [{"text": "rules"}]}
    user, model, results = req["contents"]
    assert user["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}
    assert user["parts"][2] == {"fileData": {"mimeType": "image/webp",
                                             "fileUri": "https://x.test/cat.webp?s=1"}}
    assert model["parts"] == [{"text": "Let me check."},
                              {"functionCall": {"name": "f", "args": {}}},
                              {"functionCall": {"name": "g", "args": {"x": 1}}}]
    assert results == {"role": "user", "parts": [  # both answers in the one turn after
        {"functionResponse": {"name": "f", "response": {"content": "plain text"}}},
        {"functionResponse": {"name": "g", "response": {"ok": True}}}]}


def test_tools_choice_schema_and_output_format() -> None:
    strict = {"type": "object", "properties": {"a": {"type": "string"}},
              "additionalProperties": False}
    req = chat_to_gemini({
        "messages": [{"role": "user", "content": "x"}], "n": 2, "seed": 7,
        "tools": [{"type": "function", "function": {"name": "s", "parameters": strict}}],
        "tool_choice": {"type": "function", "function": {"name": "s"}},
        "response_format": {"type": "json_schema", "json_schema": {"schema": strict}}})
    assert req["tools"] == [{"functionDeclarations": [
        {"name": "s", "parametersJsonSchema": strict}]}]  # full JSON Schema kept
    assert req["toolConfig"] == {"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["s"]}}
    assert req["generationConfig"] == {"candidateCount": 2, "seed": 7,
                                       "responseMimeType": "application/json",
                                       "responseJsonSchema": strict}


@pytest.mark.parametrize("field,value", [
    ("logit_bias", {"1": 1}), ("logprobs", True), ("audio", {"voice": "x"}),
    ("modalities", ["text", "audio"]), ("reasoning_effort", "extreme"),
    ("response_format", {"type": "grammar"}), ("tool_choice", "sometimes")])
def test_what_gemini_cannot_do_is_named(field: str, value: object) -> None:
    with pytest.raises(TranslationError) as e:
        chat_to_gemini({"messages": [{"role": "user", "content": "x"}], field: value})
    assert e.value.param == field


def test_a_tool_result_for_no_call_is_named() -> None:
    with pytest.raises(TranslationError) as e:
        chat_to_gemini({"messages": [{"role": "user", "content": "x"},
                                     {"role": "tool", "tool_call_id": "zz", "content": "r"}]})
    assert e.value.param == "messages[1].tool_call_id"


def test_answer_finish_reasons_usage_and_blocked_prompts() -> None:
    ans = gemini_to_chat({"candidates": [{"content": {"parts": [
        {"text": "deliberating", "thought": True}, {"text": "cut off"}]},
        "finishReason": "MAX_TOKENS"}], "usageMetadata": {
        "promptTokenCount": 100, "cachedContentTokenCount": 60, "toolUsePromptTokenCount": 5,
        "candidatesTokenCount": 20, "thoughtsTokenCount": 30}}, "m")
    choice = ans["choices"][0]
    assert choice["message"]["content"] == "cut off" and choice["finish_reason"] == "length"
    assert ans["usage"] == {"prompt_tokens": 105, "completion_tokens": 50, "total_tokens": 155,
                            "prompt_tokens_details": {"cached_tokens": 60},
                            "completion_tokens_details": {"reasoning_tokens": 30}}
    safety = gemini_to_chat({"candidates": [{"finishReason": "SAFETY"}]}, "m")
    assert safety["choices"][0]["finish_reason"] == "content_filter"
    blocked = gemini_to_chat({"promptFeedback": {"blockReason": "SAFETY"}}, "m")
    assert blocked["choices"][0]["finish_reason"] == "content_filter"
    assert usage(None)["total_tokens"] == 0


def test_errors_become_openai_errors() -> None:
    body = orjson.loads(gemini_error_to_openai(400, orjson.dumps({"error": {
        "code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT"}})))
    assert body == {"error": {"message": "API key not valid", "type": "invalid_request_error",
                              "code": "INVALID_ARGUMENT", "param": None}}
    assert orjson.loads(gemini_error_to_openai(502, b"<html>bad gateway"))["error"]["message"]


def sse(*events: dict[str, object]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events)


def test_stream_in_any_pieces_ends_with_usage_and_done() -> None:
    raw = sse({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}],
               "usageMetadata": {"promptTokenCount": 3}},
              {"candidates": [{"content": {"parts": [{"text": "lo"}, {"functionCall": {
                  "name": "f", "args": {"q": 1}}}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4}})
    for size in (1, 7, len(raw)):
        conv = GeminiToChatStream("m")
        out = b"".join(conv.feed(raw[i:i + size]) for i in range(0, len(raw), size))
        out += conv.finish()
        chunks = [orjson.loads(line[6:]) for line in out.split(b"\n\n")
                  if line.startswith(b"data: {")]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                       if c["choices"])
        assert text == "Hello"
        calls = [t for c in chunks if c["choices"]
                 for t in c["choices"][0]["delta"].get("tool_calls") or ()]
        assert [(t["index"], t["function"]["name"], t["function"]["arguments"])
                for t in calls] == [(0, "f", '{"q":1}')]
        finish = [c["choices"][0]["finish_reason"] for c in chunks
                  if c["choices"] and c["choices"][0]["finish_reason"]]
        assert finish == ["tool_calls"]
        assert chunks[-1]["usage"]["completion_tokens"] == 4
        assert out.endswith(b"data: [DONE]\n\n")


def test_an_unfinished_stream_gets_no_done() -> None:
    conv = GeminiToChatStream("m")
    conv.feed(sse({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]}))
    assert conv.finish() == b""  # the relay reports the cut; nothing pretends it ended
