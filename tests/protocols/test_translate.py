"""Request translation between OpenAI chat completions and Anthropic Messages."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from tollway.protocols.translate import (
    TranslationError,
    chat_to_messages,
    messages_to_chat,
)

TOOL = {"type": "function", "function": {
    "name": "lookup", "description": "Look something up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}
PNG = base64.b64encode(b"\x89PNG fake").decode()


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": list(messages), **extra}


# -- chat -> messages requests -----------------------------------------------------------------


def test_system_and_developer_become_system_and_defaults_apply() -> None:
    req = chat_to_messages(chat({"role": "system", "content": "Be terse."},
                                {"role": "developer", "content": [{"type": "text", "text": "No"
                                                                   " emoji."}]},
                                {"role": "user", "content": "Hi"}), "claude-sonnet-4-5")
    assert req == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "No emoji."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }
    single = chat_to_messages(chat({"role": "system", "content": "S"},
                                   {"role": "user", "content": "Hi"}), "m", 123)
    assert single["system"] == "S" and single["max_tokens"] == 123


def test_multipart_user_content_with_images() -> None:
    req = chat_to_messages(chat({"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}",
                                            "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}), "m")
    assert req["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_pdf_file_part_becomes_document() -> None:
    pdf = base64.b64encode(b"%PDF-1.4").decode()
    req = chat_to_messages(chat({"role": "user", "content": [{"type": "file", "file": {
        "filename": "a.pdf", "file_data": f"data:application/pdf;base64,{pdf}"}}]}), "m")
    assert req["messages"][0]["content"] == [{"type": "document", "title": "a.pdf", "source": {
        "type": "base64", "media_type": "application/pdf", "data": pdf}}]


def test_tool_calls_results_merged_and_ordered() -> None:
    req = chat_to_messages(chat(
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": '{"query": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "lookup", "arguments": "{not json"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
        {"role": "user", "content": "And tomorrow?"},
        tools=[TOOL], tool_choice="auto"), "m")
    msgs = req["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"query": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "lookup", "input": {"_raw": "{not json"}},
    ]
    assert msgs[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "call_2",
         "content": [{"type": "text", "text": "rain"}]},
        {"type": "text", "text": "And tomorrow?"},
    ]
    assert req["tools"] == [{"name": "lookup", "description": "Look something up",
                             "input_schema": TOOL["function"]["parameters"]}]
    assert req["tool_choice"] == {"type": "auto"}


def test_consecutive_same_role_merged_and_empty_dropped() -> None:
    req = chat_to_messages(chat({"role": "user", "content": "a"},
                                {"role": "user", "content": ""},
                                {"role": "user", "content": "b"},
                                {"role": "assistant", "content": "Sure, "}), "m")
    assert req["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Sure,"}]},  # prefill trimmed
    ]


def test_tool_results_go_before_text_when_a_user_turn_precedes_them() -> None:
    req = chat_to_messages(chat(
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "t", "arguments": ""}}]},
        {"role": "user", "content": "hurry"},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}, tools=[TOOL]), "m")
    assert [b["type"] for b in req["messages"][2]["content"]] == ["tool_result", "text"]
    assert req["messages"][1]["content"][0]["input"] == {}


def test_tool_ids_sanitised_consistently() -> None:
    req = chat_to_messages(chat(
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "functions.get:0", "type": "function",
                                              "function": {"name": "get", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "functions.get:0", "content": "ok"}, tools=[TOOL]), "m")
    assert req["messages"][1]["content"][0]["id"] == "functions_get_0"
    assert req["messages"][2]["content"][0]["tool_use_id"] == "functions_get_0"


def test_tool_history_without_tools_declares_them() -> None:
    req = chat_to_messages(chat(
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "get", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}), "m")
    assert [t["name"] for t in req["tools"]] == ["get"]
    assert req["tool_choice"] == {"type": "none"}


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", None, {"type": "auto"}),
    ("required", None, {"type": "any"}),
    ("none", None, {"type": "none"}),
    ({"type": "function", "function": {"name": "lookup"}}, None,
     {"type": "tool", "name": "lookup"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    (None, None, None),
])
def test_tool_choice_variants(choice: Any, parallel: bool | None, expected: Any) -> None:
    extra: dict[str, Any] = {"tools": [TOOL]}
    if choice is not None:
        extra["tool_choice"] = choice
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    req = chat_to_messages(chat({"role": "user", "content": "x"}, **extra), "m")
    assert req.get("tool_choice") == expected


def test_safety_identifier_is_the_user_too() -> None:
    req = chat_to_messages(chat({"role": "user", "content": "x"}, safety_identifier="s-1"), "m")
    assert req["metadata"] == {"user_id": "s-1"}


def test_sampling_limits_stop_user_and_dropped_fields() -> None:
    req = chat_to_messages(chat({"role": "user", "content": "x"}, max_tokens=50,
                                max_completion_tokens=70, temperature=1.7, top_p=0.5,
                                stop=["END", "\n", ""], stream=True, user="u-1", logprobs=True,
                                seed=3, frequency_penalty=0.2, n=1, stream_options={
                                    "include_usage": True}, response_format={"type": "text"},
                                reasoning_effort="low", store=True), "m")
    assert req == {"model": "m", "messages": req["messages"], "max_tokens": 70,
                   "temperature": 1.0, "stop_sequences": ["END"], "stream": True,
                   "metadata": {"user_id": "u-1"}}
    only_top_p = chat_to_messages(chat({"role": "user", "content": "x"}, top_p=0.9,
                                       stop="STOP"), "m")
    assert only_top_p["top_p"] == 0.9 and only_top_p["stop_sequences"] == ["STOP"]


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
     "response_format"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"tool_choice": "auto", "tools": [{"type": "custom", "custom": {"name": "x"}}]},
     "tools[0]"),
])
def test_unsupported_requests_rejected(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as info:
        chat_to_messages(chat({"role": "user", "content": "x"}, **extra), "m")
    assert info.value.param == param and str(info.value)


def test_bad_content_rejected_with_location() -> None:
    with pytest.raises(TranslationError, match=r"messages\[0\]\.content\[0\]"):
        chat_to_messages(chat({"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}), "m")
    with pytest.raises(TranslationError):
        chat_to_messages(chat({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}), "m")


def test_input_body_not_mutated() -> None:
    body = chat({"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                tools=[TOOL])
    before = orjson.dumps(body)
    chat_to_messages(body, "m")
    assert orjson.dumps(body) == before


# -- messages -> chat requests -----------------------------------------------------------------


def test_messages_to_chat_full_turn() -> None:
    body = {
        "model": "claude-x", "max_tokens": 300, "system": [
            {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Cite sources."}],
        "stop_sequences": ["END"], "temperature": 0.3, "top_k": 5, "stream": True,
        "metadata": {"user_id": "u-9"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "lookup", "description": "Look up",
                   "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "png"}},
                {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "an image"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "boom"}]},
                {"type": "text", "text": "Go on."}]},
        ],
    }
    req = messages_to_chat(body, "gpt-4.1")
    assert req == {
        "model": "gpt-4.1", "max_tokens": 300, "stop": ["END"], "temperature": 0.3,
        "stream": True, "stream_options": {"include_usage": True}, "user": "u-9",
        "tools": [{"type": "function", "function": {
            "name": "lookup", "description": "Look up", "parameters": {"type": "object"}}}],
        "tool_choice": "required", "parallel_tool_calls": False,
        "messages": [
            {"role": "system", "content": "Be terse.\n\nCite sources."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "lookup", "arguments": '{"q":"png"}'}},
                {"id": "toolu_2", "type": "function",
                 "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "an image"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
            {"role": "user", "content": "Go on."},
        ],
    }


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "lookup"}, {"type": "function", "function": {"name": "lookup"}}),
])
def test_messages_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    req = messages_to_chat({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                            "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
                            "tool_choice": choice}, "g")
    assert req["tool_choice"] == expected and "parallel_tool_calls" not in req
    assert req["messages"] == [{"role": "user", "content": "x"}] and "stream" not in req


def test_messages_tool_result_images_follow_as_user_turn() -> None:
    req = messages_to_chat({"max_tokens": 5, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "screenshot"},
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}]}, "g")
    assert req["messages"][1:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "screenshot"},
        {"role": "user", "content": [{"type": "image_url",
                                      "image_url": {"url": "https://x/y.png"}}]}]


def test_messages_server_tools_rejected() -> None:
    with pytest.raises(TranslationError, match="server tools"):
        messages_to_chat({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                          "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "g")
