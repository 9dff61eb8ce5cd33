"""Hypothesis strategies for fuzzing the gateway's endpoints.

Two kinds of input: structurally valid requests in which the fields tollway reads get values
of the wrong type (or the right type, wrong shape), and garbage (random JSON, nesting up to
2,000 deep, lone surrogates written as raw `\\ud800` escapes, numbers no double holds, bytes
that are not JSON or not UTF-8, empty bodies). A body is built as Python values and written
by `encode`, which lets a `Raw` piece stand for JSON text no serialiser would produce.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is where the value sits: deep nesting, `1e999`, `"\\ud800"`."""

    text: bytes


def encode(value: Any) -> bytes:
    """`value` as JSON bytes, each Raw piece spliced in verbatim."""
    pieces: list[bytes] = []

    def default(obj: Any) -> Any:
        if isinstance(obj, Raw):
            pieces.append(obj.text)
            return f"\x00RAW{len(pieces) - 1}\x00"
        raise TypeError(type(obj).__name__)

    text = json.dumps(value, default=default, ensure_ascii=True).encode()
    for i, piece in enumerate(pieces):
        text = text.replace(json.dumps(f"\x00RAW{i}\x00").encode(), piece, 1)
    return text


def deep(depth: int, kind: str = "list") -> Raw:
    """A value nested `depth` containers deep."""
    if kind == "list":
        return Raw(b"[" * depth + b"]" * depth)
    if kind == "dict":
        return Raw(b'{"a":' * depth + b"1" + b"}" * depth)
    # messages-shaped: what a reader that walks content parts would follow
    return Raw(b'[{"type":"text","text":' * depth + b'"x"' + b"}]" * depth)


DEPTHS = st.sampled_from([20, 99, 100, 101, 150, 254, 255, 300, 1023, 1025, 1500, 2000])
deep_values = st.builds(deep, DEPTHS, st.sampled_from(["list", "dict", "parts"]))
lone_surrogates = st.sampled_from([Raw(b'"\\ud800"'), Raw(b'"a\\udfffb"'),
                                   Raw(b'"\\udc00\\ud800"'), Raw(b'"\\ud83d"')])
huge_numbers = st.sampled_from([Raw(b"1e400"), Raw(b"-1e400"), Raw(b"1" * 400),
                                Raw(b"18446744073709551616"), Raw(b"-9223372036854775809"),
                                Raw(b"1e-400"), Raw(b"0.1e99999")])
not_json = st.sampled_from([Raw(b"NaN"), Raw(b"Infinity"), Raw(b"'x'"), Raw(b'"\xff\xfe"'),
                            Raw(b"undefined")])

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
#: what a field may be given instead of what it should hold (sometimes what it should)
plain = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 5, 2**63, 1.5, -0.0, "", "x", [], [1], ["x"],
                     [None], [[]], [{}], {}, {"a": 1}, {"type": 5}, {"text": []},
                     {"type": "text"}, {"type": "text", "text": 5}]),
    json_values)
#: values no field should hold, and that the JSON parser or writer may choke on
hostile = st.one_of(deep_values, lone_surrogates, huge_numbers)
wrong = st.one_of(plain, plain, plain, hostile)


# --- valid requests, one per endpoint -------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "lookup", "description": "finds",
                                         "parameters": {"type": "object", "properties": {
                                             "q": {"type": "string"}}}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup",
                                                         "arguments": '{"q": "x"}'}}


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "max_tokens": 5, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url",
                                      "image_url": {"url": "https://example.com/a.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
        {"role": "user", "content": "thanks"}], "tools": [TOOL]}


def messages(model: str) -> dict[str, Any]:
    return {"model": model, "max_tokens": 5, "system": [{"type": "text", "text": "brief"}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "looking"},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup",
                     "input": {"q": "x"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "found"},
                    {"type": "text", "text": "thanks"}]}],
            "tools": [{"name": "lookup", "description": "finds",
                       "input_schema": {"type": "object"}}],
            "metadata": {"user_id": "u1"}}


def responses(model: str) -> dict[str, Any]:
    return {"model": model, "max_output_tokens": 16, "instructions": "be brief",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                      {"type": "function_call", "call_id": "c1", "name": "lookup",
                       "arguments": "{}"},
                      {"type": "function_call_output", "call_id": "c1", "output": "found"},
                      {"role": "user", "content": "thanks"}],
            "tools": [{"type": "function", "name": "lookup", "parameters": {}}],
            "metadata": {"k": "v"}}


def completions(model: str) -> dict[str, Any]:
    return {"model": model, "prompt": "Say hi", "max_tokens": 5}


def embeddings(model: str) -> dict[str, Any]:
    return {"model": model, "input": ["one", "two"]}


def count_tokens(model: str) -> dict[str, Any]:
    body = messages(model)
    del body["max_tokens"], body["metadata"]
    return body


#: paths into each body whose values tollway reads; `*` is any existing list index
FIELDS: dict[str, list[tuple[Any, ...]]] = {
    "chat": [("model",), ("messages",), ("messages", "*"), ("messages", "*", "role"),
             ("messages", "*", "content"), ("messages", 1, "content", "*"),
             ("messages", 1, "content", "*", "type"), ("messages", 1, "content", 0, "text"),
             ("messages", 1, "content", 1, "image_url"), ("messages", 2, "tool_calls"),
             ("messages", 2, "tool_calls", 0), ("messages", 2, "tool_calls", 0, "function"),
             ("messages", 2, "tool_calls", 0, "function", "name"),
             ("messages", 2, "tool_calls", 0, "function", "arguments"),
             ("messages", 2, "tool_calls", 0, "id"), ("messages", 3, "tool_call_id"),
             ("messages", "*", "name"), ("tools",), ("tools", 0), ("tools", 0, "function"),
             ("tools", 0, "function", "name"), ("tools", 0, "function", "parameters"),
             ("tool_choice",), ("functions",), ("function_call",), ("stream",),
             ("stream_options",), ("max_tokens",), ("max_completion_tokens",),
             ("temperature",), ("top_p",), ("stop",), ("n",), ("response_format",),
             ("user",), ("metadata",), ("parallel_tool_calls",), ("modalities",),
             ("audio",), ("seed",), ("logit_bias",), ("extra",)],
    "completions": [("model",), ("prompt",), ("prompt", "*"), ("stream",),
                    ("stream_options",), ("max_tokens",), ("temperature",), ("stop",),
                    ("n",), ("user",)],
    "embeddings": [("model",), ("input",), ("input", "*"), ("encoding_format",),
                   ("dimensions",), ("user",)],
    "responses": [("model",), ("input",), ("input", "*"), ("input", "*", "role"),
                  ("input", "*", "type"), ("input", 0, "content"),
                  ("input", 0, "content", "*"), ("input", 0, "content", 0, "text"),
                  ("input", 1, "arguments"), ("input", 1, "name"), ("input", 2, "output"),
                  ("input", 3, "content"), ("instructions",), ("previous_response_id",),
                  ("tools",), ("tools", 0), ("tools", 0, "name"), ("stream",),
                  ("max_output_tokens",), ("metadata",), ("store",), ("text",),
                  ("reasoning",), ("temperature",), ("tool_choice",)],
    "messages": [("model",), ("messages",), ("messages", "*"), ("messages", "*", "role"),
                 ("messages", "*", "content"), ("messages", 1, "content", "*"),
                 ("messages", 1, "content", "*", "type"), ("messages", 1, "content", 0, "text"),
                 ("messages", 1, "content", 1, "input"), ("messages", 1, "content", 1, "name"),
                 ("messages", 1, "content", 1, "id"), ("messages", 2, "content", 0, "content"),
                 ("messages", 2, "content", 0, "tool_use_id"), ("system",), ("system", 0),
                 ("system", 0, "text"), ("tools",), ("tools", 0), ("tools", 0, "name"),
                 ("tools", 0, "input_schema"), ("tool_choice",), ("stream",),
                 ("stream_options",), ("max_tokens",), ("metadata",), ("metadata", "user_id"),
                 ("stop_sequences",), ("temperature",), ("top_p",), ("top_k",), ("thinking",),
                 ("output_format",), ("output_config",), ("mcp_servers",), ("extra",)],
}
FIELDS["count_tokens"] = [f for f in FIELDS["messages"]
                          if f[0] not in ("max_tokens", "metadata", "stream", "stream_options")]

# --- values of the right type, so that requests get past validation to every stage -------

texts = st.text(max_size=40)
args_text = st.one_of(texts, st.just("{}"), st.just('{"q": "x"}'), json_values.map(encode).map(
    bytes.decode), st.builds(lambda r: r.text.decode(), deep_values))
chat_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": texts}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries(
        {"url": st.sampled_from(["https://example.com/a.png", "data:image/png;base64,AAAA",
                                 "data:x", "ftp://x", ""])})}),
    st.fixed_dictionaries({"type": st.sampled_from(["refusal", "input_audio", "file", "zzz"]),
                           "refusal": texts}))
block = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": texts}),
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": texts, "name": texts,
                           "input": st.dictionaries(texts, json_values, max_size=3)}),
    st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": st.sampled_from(
        ["toolu_1", "x"]), "content": st.one_of(texts, st.lists(st.fixed_dictionaries(
            {"type": st.just("text"), "text": texts}), max_size=2))}),
    st.fixed_dictionaries({"type": st.sampled_from(["image", "document", "thinking", "zzz"]),
                           "source": st.fixed_dictionaries({"type": st.sampled_from(
                               ["base64", "url", "text"]), "data": texts, "url": texts})}))
counts = st.integers(1, 2**40)
numbers = st.one_of(st.integers(-3, 3), st.floats(-5, 5))
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "x"])
RIGHT: dict[str, list[tuple[tuple[Any, ...], st.SearchStrategy[Any]]]] = {
    "chat": [(("messages", "*", "content"), st.one_of(texts, st.none(), st.lists(
        chat_part, max_size=3))), (("messages", "*", "role"), roles),
        (("messages", 2, "tool_calls", 0, "function", "arguments"), args_text),
        (("messages", 3, "tool_call_id"), st.sampled_from(["call_1", "other", ""])),
        (("stream",), st.booleans()), (("stream_options",), st.fixed_dictionaries(
            {"include_usage": st.booleans()})), (("max_tokens",), counts),
        (("max_completion_tokens",), counts), (("temperature",), numbers),
        (("top_p",), numbers), (("n",), st.integers(0, 3)),
        (("stop",), st.one_of(texts, st.lists(texts, max_size=3))),
        (("tool_choice",), st.sampled_from(["auto", "none", "required", "x", {
            "type": "function", "function": {"name": "lookup"}}, {"type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": [TOOL]}}])),
        (("tools", 0, "function", "parameters"), st.dictionaries(texts, json_values)),
        (("parallel_tool_calls",), st.booleans()), (("user",), texts),
        (("metadata",), st.dictionaries(texts, texts, max_size=3)),
        (("response_format",), st.sampled_from([{"type": "json_object"},
                                                {"type": "json_schema", "json_schema": {}}])),
        (("extra",), json_values)],
    "completions": [(("prompt",), st.one_of(texts, st.lists(texts, max_size=3), st.lists(
        st.integers(0, 10**6), max_size=5))), (("stream",), st.booleans()),
        (("max_tokens",), counts), (("temperature",), numbers), (("echo",), st.booleans())],
    "embeddings": [(("input",), st.one_of(texts, st.lists(texts, min_size=1, max_size=3),
                                          st.lists(st.integers(0, 10**6), min_size=1,
                                                   max_size=5))),
                   (("dimensions",), st.integers(1, 4096)),
                   (("encoding_format",), st.sampled_from(["float", "base64", "x"]))],
    "responses": [(("input",), st.one_of(texts, st.lists(st.fixed_dictionaries(
        {"role": roles, "content": st.one_of(texts, st.lists(st.fixed_dictionaries(
            {"type": st.sampled_from(["input_text", "output_text", "input_image"]),
             "text": texts}), max_size=2))}), max_size=3))),
        (("input", 1, "arguments"), args_text), (("input", 2, "output"), texts),
        (("instructions",), texts), (("previous_response_id",), texts),
        (("stream",), st.booleans()), (("max_output_tokens",), counts),
        (("store",), st.booleans()), (("extra",), json_values)],
    "messages": [(("messages", "*", "content"), st.one_of(texts, st.lists(block, max_size=3))),
                 (("messages", "*", "role"), roles), (("system",), st.one_of(
                     texts, st.lists(st.fixed_dictionaries({"type": st.just("text"),
                                                            "text": texts}), max_size=2))),
                 (("messages", 1, "content", 1, "input"), st.dictionaries(texts, json_values)),
                 (("stream",), st.booleans()), (("max_tokens",), counts),
                 (("temperature",), numbers), (("stop_sequences",), st.lists(texts,
                                                                             max_size=3)),
                 (("tool_choice",), st.sampled_from([{"type": "auto"}, {"type": "any"}, {
                     "type": "tool", "name": "lookup"}, {"type": "none"}, {"type": "x"}])),
                 (("tools", 0, "input_schema"), st.dictionaries(texts, json_values)),
                 (("metadata",), st.fixed_dictionaries({"user_id": texts})),
                 (("output_format",), st.just({"type": "json_schema", "schema": {}})),
                 (("extra",), json_values)],
}
RIGHT["count_tokens"] = [(p, v) for p, v in RIGHT["messages"]
                         if p[0] not in ("max_tokens", "metadata", "stream")]

BUILDERS = {"chat": chat, "completions": completions, "embeddings": embeddings,
            "responses": responses, "messages": messages, "count_tokens": count_tokens}


def _set(body: Any, path: tuple[Any, ...], value: Any, pick: int) -> None:
    """Put `value` at `path` if the path still leads somewhere (earlier mutations may have
    replaced a parent); `*` picks an index of the list found there."""
    node = body
    for i, key in enumerate(path):
        last = i == len(path) - 1
        if key == "*":
            if not isinstance(node, list) or not node:
                return
            key = pick % len(node)
        if isinstance(node, dict) and (last or key in node):
            if last:
                node[key] = value
                return
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            if last:
                node[key] = value
                return
            node = node[key]
        else:
            return


MODES = ("right", "wrong", "hostile")


@st.composite
def mutated(draw: st.DrawFn, endpoint: str, model: str, mode: str) -> bytes:
    """A valid request of `endpoint` for `model`, sometimes with `stream: true`, with one to
    three fields changed, as `mode` says: to other values of their type ("right", so that
    requests reach every stage and the upstream), to values of any type ("wrong"), or to
    values a JSON parser or writer may choke on ("hostile")."""
    body = copy.deepcopy(BUILDERS[endpoint](model))  # the builders share TOOL and CALL
    if endpoint not in ("embeddings", "count_tokens") and draw(st.booleans()):
        body["stream"] = True
    if mode == "right":
        for _ in range(draw(st.integers(1, 3))):
            path, values = draw(st.sampled_from(RIGHT[endpoint]))
            _set(body, path, copy.deepcopy(draw(values)), draw(st.integers(0, 7)))
        return encode(body)
    values = hostile if mode == "hostile" else plain
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(FIELDS[endpoint]))
        if draw(st.integers(0, 9)) == 0:
            node: Any = body  # delete instead: a missing field
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(path[-1], None)
            continue
        # a copy: sampled values are shared between examples, and later mutations may
        # write inside this one
        _set(body, path, copy.deepcopy(draw(values)), draw(st.integers(0, 7)))
    return encode(body)


@st.composite
def garbage(draw: st.DrawFn, model: str | None = None) -> bytes:
    """Bodies that are not a request at all, or barely."""
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return b""
    if kind == 2:
        return encode(draw(json_values))
    if kind == 3:
        return draw(deep_values).text
    if kind == 4:
        return encode(draw(st.one_of(lone_surrogates, huge_numbers, not_json)))
    if kind == 5 and model is not None:  # a valid body cut short, or its bytes broken
        body = encode(chat(model))
        cut = draw(st.integers(0, len(body) - 1))
        return body[:cut] if draw(st.booleans()) else body[:cut] + b"\xff" + body[cut:]
    if kind == 6 and model is not None:  # a bad value deep inside, anywhere
        return encode({"model": model, "messages": [{"role": "user", "content": draw(
            st.one_of(deep_values, lone_surrogates, huge_numbers))}], "x": draw(wrong)})
    return encode(draw(st.dictionaries(st.text(max_size=10), wrong, max_size=4)))
