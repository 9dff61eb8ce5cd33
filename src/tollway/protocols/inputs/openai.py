"""The OpenAI dialect's requests as tollway reads them: chat completions, completions,
embeddings and responses, checked against the shapes of OpenAI's API reference. Depths: the
body is 1, `messages` 2, a message 3, its content parts 4 and each part 5."""

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
    WALKED,
    Spec,
    check_fields,
    is_str_or_object,
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
    **_COMMON, "messages": WALKED, "max_tokens": COUNT, "max_completion_tokens": COUNT,
    "tools": OBJECTS, "tool_choice": STR_OR_OBJECT, "functions": OBJECTS,
    "function_call": STR_OR_OBJECT, "response_format": OBJECT, "parallel_tool_calls": BOOL,
    "modalities": STRS, "audio": OBJECT, "logit_bias": OBJECT,
}
_COMPLETIONS: dict[str, Spec] = {**_COMMON, "prompt": WALKED, "max_tokens": COUNT,
                                 "echo": BOOL, "suffix": STR, "best_of": INT, "logprobs": INT}
_EMBEDDINGS: dict[str, Spec] = {"input": WALKED, "encoding_format": STR, "dimensions": COUNT,
                                "user": STR}
_RESPONSES: dict[str, Spec] = {
    **_COMMON, "input": WALKED, "instructions": STR, "previous_response_id": STR,
    "tools": OBJECTS, "tool_choice": STR_OR_OBJECT, "max_output_tokens": COUNT,
    "store": BOOL, "text": OBJECT, "reasoning": OBJECT, "parallel_tool_calls": BOOL,
    "truncation": STR,
}
_MESSAGE: dict[str, Spec] = {"role": STR, "content": WALKED, "tool_calls": WALKED,
                             "name": STR, "tool_call_id": STR, "function_call": OBJECT,
                             "refusal": STR}
_PART: dict[str, Spec] = {"type": STR}
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_CALL: dict[str, Spec] = {"id": STR, "type": STR, "function": WALKED}
_FUNCTION: dict[str, Spec] = {"name": STR, "arguments": (is_str_or_object, "a string of JSON")}
_ITEM: dict[str, Spec] = {"type": STR, "role": STR, "call_id": STR, "name": STR,
                          "arguments": STR, "id": STR, "content": WALKED, "output": WALKED}


def validate(endpoint: str, body: dict[str, Any]) -> None:
    """Raise a 400 naming the first field tollway reads that has the wrong type, or the
    field that nests past MAX_DEPTH."""
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
            _message(m, f"messages[{i}]")
        elif len(m) == 2 and type(m.get("content")) is str and type(m.get("role")) is str:
            continue  # most turns: a role and a string
        elif not _plain(m):
            _message(m, f"messages[{i}]")


def _plain(m: dict[str, Any]) -> bool:
    """The common turns, checked in one go: a role and a string (and maybe a name or the
    id of the call it answers, strings too), or an assistant turn of plain function calls.
    Nothing in them is nested past a few levels."""
    if type(m.get("role")) is not str:
        return False
    calls = None
    for key, value in m.items():
        if type(value) is not str:
            if key == "tool_calls" and type(value) is list:
                calls = value
            elif not (value is None and key == "content"):
                return False
        elif key in _NOT_TEXT:
            return False
    return calls is None or all(map(_plain_call, calls))


_NOT_TEXT = frozenset({"tool_calls", "function_call"})


def _plain_call(call: Any) -> bool:
    """{"id": "...", "type": "function", "function": {"name": "...", "arguments": "..."}}"""
    if type(call) is not dict or len(call) != 3 or type(call.get("id")) is not str \
            or call.get("type") != "function":
        return False
    fn = call.get("function")
    return (type(fn) is dict and len(fn) == 2 and type(fn.get("name")) is str
            and type(fn.get("arguments")) is str)


def _message(m: Any, at: str) -> None:
    if type(m) is not dict:
        raise wrong_type(at, "an object", m)
    require(m, "role", STR, at + ".")
    check_fields(m, _MESSAGE, at + ".", 3)
    content = m.get("content")
    if content is not None and type(content) is not str:
        _parts(content, at + ".content", 4)
    calls = m.get("tool_calls")
    if calls is not None:
        _tool_calls(calls, at + ".tool_calls", 4)


def _parts(content: Any, where: str, depth: int) -> None:
    """Content as an array (at `depth`) of parts, each an object of a `type`; text parts
    carry text."""
    for k, part in enumerate(objects(content, where, "content parts")):
        at = f"{where}[{k}]"
        require(part, "type", STR, at + ".")
        check_fields(part, _PART, at + ".", depth + 1)
        kind = part["type"]
        if kind in _TEXT_PARTS:
            require(part, "text", STR, at + ".")
        elif kind == "image_url":
            image = part.get("image_url")
            if type(image) is dict:
                require(image, "url", STR, at + ".image_url.")
            elif type(image) is not str:
                raise wrong_type(at + ".image_url", "an object with a url", image)
        elif kind == "refusal":
            require(part, "refusal", STR, at + ".")


def _tool_calls(calls: Any, where: str, depth: int) -> None:
    for j, call in enumerate(objects(calls, where, "tool calls")):
        at = f"{where}[{j}]"
        check_fields(call, _CALL, at + ".", depth + 1)
        if call.get("type", "function") != "function":
            continue  # custom tool calls carry their own shape
        fn = call.get("function")
        if type(fn) is not dict:
            raise wrong_type(at + ".function", "an object", fn)
        require(fn, "name", STR, at + ".function.")
        check_fields(fn, _FUNCTION, at + ".function.", depth + 2)


def _tools(tools: Any) -> None:
    """Function tools name their function (their depth was walked with the body's)."""
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
        at = f"input[{i}]"
        check_fields(item, _ITEM, at + ".", 3)
        content = item.get("content")
        if content is not None and type(content) is not str:
            _parts(content, at + ".content", 4)
        output = item.get("output")
        if output is not None and type(output) is not str:
            _parts(output, at + ".output", 4)


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
