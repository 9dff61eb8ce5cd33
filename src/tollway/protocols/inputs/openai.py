"""The OpenAI dialect's requests as tollway reads them: chat completions, completions,
embeddings and responses, checked against the shapes of OpenAI's API reference."""

from __future__ import annotations

from typing import Any

from tollway.protocols.inputs import (
    BOOL,
    COUNT,
    INT,
    NUMBER,
    OBJECT,
    OBJECTS,
    STR,
    STR_OR_OBJECT,
    STR_OR_STRS,
    STRS,
    Spec,
    check_fields,
    objects,
    require,
    wrong_type,
    wrong_value,
)

_COMMON: dict[str, Spec] = {
    "stream": BOOL, "stream_options": OBJECT, "temperature": NUMBER, "top_p": NUMBER,
    "n": INT, "stop": STR_OR_STRS, "user": STR, "safety_identifier": STR, "metadata": OBJECT,
    "seed": INT,
}
_CHAT: dict[str, Spec] = {
    **_COMMON, "max_tokens": COUNT, "max_completion_tokens": COUNT, "tools": OBJECTS,
    "tool_choice": STR_OR_OBJECT, "functions": OBJECTS, "function_call": STR_OR_OBJECT,
    "response_format": OBJECT, "parallel_tool_calls": BOOL, "modalities": STRS,
    "audio": OBJECT, "logit_bias": OBJECT,
}
_COMPLETIONS: dict[str, Spec] = {**_COMMON, "max_tokens": COUNT, "echo": BOOL,
                                 "suffix": STR, "best_of": INT, "logprobs": INT}
_EMBEDDINGS: dict[str, Spec] = {"encoding_format": STR, "dimensions": COUNT, "user": STR}
_RESPONSES: dict[str, Spec] = {
    **_COMMON, "instructions": STR, "previous_response_id": STR, "tools": OBJECTS,
    "tool_choice": STR_OR_OBJECT, "max_output_tokens": COUNT, "store": BOOL,
    "text": OBJECT, "reasoning": OBJECT, "parallel_tool_calls": BOOL, "truncation": STR,
}
_MESSAGE_EXTRAS: dict[str, Spec] = {"name": STR, "tool_call_id": STR,
                                    "function_call": OBJECT, "refusal": STR}
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_ITEM: dict[str, Spec] = {"type": STR, "role": STR, "call_id": STR, "name": STR,
                          "arguments": STR, "id": STR}


def validate(endpoint: str, body: dict[str, Any]) -> None:
    """Raise a 400 naming the first field tollway reads that has the wrong type."""
    if endpoint == "chat":
        check_fields(body, _CHAT)
        _messages(body.get("messages"))
        _tools(body.get("tools"))
    elif endpoint == "responses":
        check_fields(body, _RESPONSES)
        _input(body.get("input"))
    elif endpoint == "completions":
        check_fields(body, _COMPLETIONS)
        _texts_or_tokens(body.get("prompt"), "prompt", required=False)
    elif endpoint == "embeddings":
        check_fields(body, _EMBEDDINGS)
        _texts_or_tokens(body.get("input"), "input", required=True)


def _messages(msgs: Any) -> None:
    if type(msgs) is not list:
        raise wrong_type("messages", "an array of messages", msgs)
    if not msgs:
        raise wrong_value("messages", "must contain at least one message")
    for i, m in enumerate(msgs):
        if type(m) is not dict:
            raise wrong_type(f"messages[{i}]", "an object", m)
        if type(m.get("role")) is not str:
            raise wrong_type(f"messages[{i}].role", "a string", m.get("role"))
        content = m.get("content")
        if content is not None and type(content) is not str:
            _parts(content, f"messages[{i}].content")
        if len(m) > 2:  # most turns are a role and a string: nothing more to look at
            check_fields(m, _MESSAGE_EXTRAS, f"messages[{i}].")
            calls = m.get("tool_calls")
            if calls is not None:
                _tool_calls(calls, f"messages[{i}].tool_calls")


def _parts(content: Any, where: str) -> None:
    """Content as an array of parts, each an object of a `type`; text parts carry text."""
    for k, part in enumerate(objects(content, where, "content parts")):
        kind = part.get("type")
        if type(kind) is not str:
            raise wrong_type(f"{where}[{k}].type", "a string", kind)
        if kind in _TEXT_PARTS:
            require(part, "text", STR, f"{where}[{k}].")
        elif kind == "image_url":
            image = part.get("image_url")
            if type(image) is dict:
                require(image, "url", STR, f"{where}[{k}].image_url.")
            elif type(image) is not str:
                raise wrong_type(f"{where}[{k}].image_url", "an object with a url", image)
        elif kind == "refusal":
            require(part, "refusal", STR, f"{where}[{k}].")


def _tool_calls(calls: Any, where: str) -> None:
    for j, call in enumerate(objects(calls, where, "tool calls")):
        at = f"{where}[{j}]"
        check_fields(call, {"id": STR, "type": STR}, at + ".")
        if call.get("type", "function") != "function":
            continue  # custom tool calls carry their own shape
        fn = call.get("function")
        if type(fn) is not dict:
            raise wrong_type(f"{at}.function", "an object", fn)
        require(fn, "name", STR, f"{at}.function.")
        args = fn.get("arguments")
        if args is not None and type(args) is not str and type(args) is not dict:
            raise wrong_type(f"{at}.function.arguments", "a string of JSON", args)


def _tools(tools: Any) -> None:
    for i, tool in enumerate(tools or ()):
        if tool.get("type", "function") != "function":
            continue  # custom and built-in tools
        fn = tool.get("function")
        if type(fn) is not dict:
            raise wrong_type(f"tools[{i}].function", "an object", fn)
        require(fn, "name", STR, f"tools[{i}].function.")
        params = fn.get("parameters")
        if params is not None and type(params) is not dict:
            raise wrong_type(f"tools[{i}].function.parameters", "an object", params)


def _input(inp: Any) -> None:
    """Responses input: a string, or items (messages, function calls and their outputs)."""
    if inp is None or type(inp) is str:
        return
    for i, item in enumerate(objects(inp, "input", "input items")):
        check_fields(item, _ITEM, f"input[{i}].")
        content = item.get("content")
        if content is not None and type(content) is not str:
            _parts(content, f"input[{i}].content")
        output = item.get("output")
        if output is not None and type(output) is not str:
            _parts(output, f"input[{i}].output")


def _texts_or_tokens(value: Any, param: str, required: bool) -> None:
    """A string, an array of strings, an array of token ids, or an array of those."""
    if type(value) is str or (value is None and not required):
        return
    if type(value) is not list:
        raise wrong_type(param, "a string or an array of strings or token ids", value)
    for i, item in enumerate(value):
        t = type(item)
        if t is str or t is int:
            continue
        if t is list and all(type(x) is int for x in item):
            continue
        raise wrong_type(f"{param}[{i}]", "a string, a token id or an array of token ids",
                         item)

