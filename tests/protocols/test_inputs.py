"""What the dialects accept at parse: every shape the official SDKs send passes; a field the
gateway reads with the wrong type is refused with a 400 whose param names it; nesting is
bounded for the whole body, and the check costs a few microseconds on an agent's chat."""

from __future__ import annotations

import copy
import timeit
from typing import Any

import orjson
import pytest
from bench.conversation import body_template
from tests.e2e import fuzz_inputs as fz

from tollway.errors import GatewayError
from tollway.protocols.inputs import MAX_DEPTH, too_deep
from tollway.protocols.inputs import anthropic as an
from tollway.protocols.inputs import openai as oa


def refused(validate: Any, endpoint: str, body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as e:
        validate(endpoint, body)
    assert e.value.status == 400
    return e.value


def bench_body() -> dict[str, Any]:
    prefix, suffix = body_template(stream=False)
    return orjson.loads(prefix + b"1" + suffix)  # type: ignore[no-any-return]


OPENAI_OK = [
    ("chat", bench_body()),
    ("chat", fz.chat("m")),
    ("chat", {"model": "m", "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "x",
                                           "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": "data:image/png;base64,AAAA"},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            {"type": "file", "file": {"file_id": "f1"}}], "name": "bob"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}],
         "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "x", "input": "y"}}]},
        {"role": "function", "name": "f", "content": None}],
        "stream": True, "stream_options": None, "stop": ["a", "b"], "n": 1, "seed": None,
        "tools": [{"type": "custom", "custom": {"name": "x"}}], "tool_choice": "auto",
        "max_completion_tokens": 10, "logit_bias": {"50256": -100}, "web_search_options": {}}),
    ("completions", fz.completions("m")),
    ("completions", {"model": "m", "prompt": [[1, 2, 3], "text", 7], "suffix": None}),
    ("embeddings", fz.embeddings("m")),
    ("embeddings", {"model": "m", "input": [[1, 2], [3]], "dimensions": 256}),
    ("responses", fz.responses("m")),
    ("responses", {"model": "m", "input": "hi", "tools": [{"type": "web_search"}],
                   "reasoning": {"effort": "low"}, "text": {"format": {"type": "text"}}}),
    ("responses", {"model": "m", "input": [
        {"type": "message", "role": "user", "content": [
            {"type": "input_image", "image_url": "https://x/y.png"},
            {"type": "input_file", "file_id": "f"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call_output", "call_id": "c", "output": [
            {"type": "input_text", "text": "done"}]}]}),
]
ANTHROPIC_OK = [
    ("messages", fz.messages("m")),
    ("count_tokens", fz.count_tokens("m")),
    ("messages", {"model": "m", "max_tokens": 5, "system": "be brief", "messages": [
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "AAAA"}},
            {"type": "document", "source": {"type": "text", "data": "x"}, "title": "t"},
            {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": "s"},
            {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "is_error": True}]}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "auto"}, "thinking": {"type": "enabled", "budget_tokens": 9},
        "metadata": {"user_id": None}, "stop_sequences": ["x"], "top_k": 5}),
]


@pytest.mark.parametrize(("endpoint", "body"), OPENAI_OK)
def test_openai_shapes_the_sdks_send_pass(endpoint: str, body: dict[str, Any]) -> None:
    oa.validate(endpoint, body)


@pytest.mark.parametrize(("endpoint", "body"), ANTHROPIC_OK)
def test_anthropic_shapes_the_sdks_send_pass(endpoint: str, body: dict[str, Any]) -> None:
    an.validate(endpoint, body)


def _with(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize(("endpoint", "path", "value", "param"), [
    ("chat", ("messages",), 5, "messages"),
    ("chat", ("messages",), [], "messages"),
    ("chat", ("messages", 3), "hi", "messages[3]"),
    ("chat", ("messages", 3, "content"), 5, "messages[3].content"),
    ("chat", ("messages", 1, "content", 0, "text"), ["x"], "messages[1].content[0].text"),
    ("chat", ("messages", 1, "content", 1, "image_url"), 5, "messages[1].content[1].image_url"),
    ("chat", ("messages", 2, "role"), None, "messages[2].role"),
    ("chat", ("messages", 2, "tool_calls"), True, "messages[2].tool_calls"),
    ("chat", ("messages", 2, "tool_calls", 0, "function", "name"), {},
     "messages[2].tool_calls[0].function.name"),
    ("chat", ("messages", 2, "tool_calls", 0, "id"), [], "messages[2].tool_calls[0].id"),
    ("chat", ("messages", 3, "tool_call_id"), 7, "messages[3].tool_call_id"),
    ("chat", ("tools", 0, "function"), "x", "tools[0].function"),
    ("chat", ("stream",), "yes", "stream"),
    ("chat", ("stream_options",), 5, "stream_options"),
    ("chat", ("max_tokens",), 0, "max_tokens"),
    ("chat", ("max_tokens",), True, "max_tokens"),
    ("chat", ("max_completion_tokens",), 1.5, "max_completion_tokens"),
    ("chat", ("temperature",), "hot", "temperature"),
    ("chat", ("stop",), [1], "stop"),
    ("chat", ("metadata",), [], "metadata"),
    ("completions", ("prompt",), {"a": 1}, "prompt"),
    ("completions", ("prompt",), ["a", [1, "x"]], "prompt[1]"),
    ("embeddings", ("input",), None, "input"),
    ("embeddings", ("input",), [None], "input[0]"),
    ("responses", ("input",), 5, "input"),
    ("responses", ("input", 1, "call_id"), [], "input[1].call_id"),
    ("responses", ("input", 0, "content", 0, "text"), 5, "input[0].content[0].text"),
    ("responses", ("instructions",), ["x"], "instructions"),
    ("responses", ("previous_response_id",), 5, "previous_response_id"),
    ("responses", ("max_output_tokens",), "9", "max_output_tokens"),
])
def test_openai_refusals_name_the_field(endpoint: str, path: tuple[Any, ...], value: Any,
                                        param: str) -> None:
    err = refused(oa.validate, endpoint, _with(fz.BUILDERS[endpoint]("m"), path, value))
    assert err.param == param
    assert f"'{param}'" in err.message


@pytest.mark.parametrize(("path", "value", "param"), [
    (("messages",), 5, "messages"),
    (("messages", 0), None, "messages[0]"),
    (("messages", 1, "content"), 5, "messages[1].content"),
    (("messages", 1, "content", 1), "x", "messages[1].content[1]"),
    (("messages", 1, "content", 1, "input"), "{}", "messages[1].content[1].input"),
    (("messages", 2, "content", 0, "tool_use_id"), 1, "messages[2].content[0].tool_use_id"),
    (("messages", 2, "content", 0, "content"), 5, "messages[2].content[0].content"),
    (("system",), 5, "system"),
    (("system", 0, "text"), None, "system[0].text"),
    (("tools", 0, "name"), 5, "tools[0].name"),
    (("max_tokens",), -1, "max_tokens"),
    (("metadata", "user_id"), 5, "metadata.user_id"),
    (("stream",), 1, "stream"),
])
def test_anthropic_refusals_name_the_field(path: tuple[Any, ...], value: Any,
                                           param: str) -> None:
    err = refused(an.validate, "messages", _with(fz.messages("m"), path, value))
    assert err.param == param and f"'{param}'" in err.message


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def levels(k: int, wrap: str) -> Any:
    """A value of `k` container levels: lists, or an object around lists."""
    return nested(k) if wrap == "list" else {"a": nested(k - 1)}


TOOL_RESULT_BLOCKS = ("messages", 2, "content", 0, "content")


@pytest.mark.parametrize(("validate", "endpoint", "path", "level", "wrap", "param"), [
    (oa.validate, "chat", ("anything",), 2, "list", "anything"),
    (oa.validate, "chat", ("metadata",), 2, "object", "metadata"),
    (oa.validate, "chat", ("tools", 0, "function", "parameters"), 5, "object", "tools"),
    (oa.validate, "chat", ("messages", 1, "content", 0, "cache_control"), 6, "object",
     "messages[1].content[0].cache_control"),
    (oa.validate, "chat", ("messages", 2, "tool_calls", 0, "function", "arguments"), 7,
     "object", "messages[2].tool_calls[0].function.arguments"),
    (oa.validate, "responses", ("input", 0, "content", 0, "x"), 6, "list",
     "input[0].content[0].x"),
    (an.validate, "messages", ("messages", 1, "content", 1, "input"), 6, "object",
     "messages[1].content[1].input"),
    (an.validate, "messages", (*TOOL_RESULT_BLOCKS, 0, "x"), 8, "list",
     "messages[2].content[0].content[0].x"),
    (an.validate, "messages", ("system", 0, "cache_control"), 4, "object",
     "system[0].cache_control"),
])
def test_nesting_is_bounded_for_the_whole_body_and_named(
        validate: Any, endpoint: str, path: tuple[Any, ...], level: int, wrap: str,
        param: str) -> None:
    """The body is level 1; a value at `level` may have MAX_DEPTH - level + 1 levels."""
    body = fz.BUILDERS[endpoint]("m")
    if path[:len(TOOL_RESULT_BLOCKS)] == TOOL_RESULT_BLOCKS:
        body = _with(body, TOOL_RESULT_BLOCKS, [{"type": "text", "text": "t"}])
    room = MAX_DEPTH - level + 1
    validate(endpoint, _with(body, path, levels(room, wrap)))
    err = refused(validate, endpoint, _with(body, path, levels(room + 1, wrap)))
    assert err.code == "nesting_too_deep" and err.param == param
    assert f"{MAX_DEPTH} levels" in err.message


def test_too_deep_counts_the_value_itself() -> None:
    assert too_deep(nested(MAX_DEPTH + 1)) and not too_deep(nested(MAX_DEPTH))
    assert too_deep({"a": nested(MAX_DEPTH)}) and not too_deep("x")


def test_validation_costs_a_few_microseconds_on_the_bench_conversation() -> None:
    """Types and depth of the 2,000-token agent chat, as parse checks them on each request.
    The bound is loose (a shared 2-core machine); the README has the measured figure."""
    body = bench_body()

    def check() -> None:
        oa.validate("chat", body)

    check()
    n = 2000
    per_request = min(timeit.repeat(check, number=n, repeat=5)) / n
    assert per_request < 30e-6, f"{per_request * 1e6:.1f} µs"
