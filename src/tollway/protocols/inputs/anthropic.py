"""The Anthropic dialect's requests as tollway reads them: messages and count_tokens,
checked against the shapes of Anthropic's API reference. Depths: the body is 1, `messages`
2, a message 3, its content blocks 4 and each block 5."""

from __future__ import annotations

from typing import Any

from tollway.protocols.inputs import (
    BOOL,
    COUNT,
    NUMBER,
    OBJECT,
    OBJECTS,
    STR,
    STRS,
    WALKED,
    Spec,
    check_fields,
    objects,
    require,
    wrong_type,
    wrong_value,
)

_MESSAGES: dict[str, Spec] = {
    "messages": WALKED, "system": WALKED, "max_tokens": COUNT, "stream": BOOL,
    "metadata": OBJECT, "stop_sequences": STRS, "temperature": NUMBER, "top_p": NUMBER,
    "top_k": NUMBER, "tools": OBJECTS, "tool_choice": OBJECT, "thinking": OBJECT,
    "output_format": OBJECT, "output_config": OBJECT, "mcp_servers": OBJECTS,
    "service_tier": STR,
}
_MESSAGE: dict[str, Spec] = {"role": STR, "content": WALKED}
_TOOL: dict[str, Spec] = {"name": STR, "type": STR, "input_schema": OBJECT}
_BLOCKS: dict[str, dict[str, Spec]] = {
    "text": {"type": STR, "text": STR},
    "tool_use": {"type": STR, "id": STR, "name": STR, "input": OBJECT},
    "tool_result": {"type": STR, "tool_use_id": STR, "is_error": BOOL, "content": WALKED},
    "image": {"type": STR, "source": OBJECT},
    "document": {"type": STR, "source": OBJECT},
}
_ANY_BLOCK: dict[str, Spec] = {"type": STR}


def validate(endpoint: str, body: dict[str, Any]) -> None:
    """Raise a 400 naming the first field tollway reads that has the wrong type, or the
    field that nests past MAX_DEPTH."""
    check_fields(body, _MESSAGES)
    system = body.get("system")
    if system is not None and type(system) is not str:
        _blocks(system, "system", 2)
    metadata = body.get("metadata")
    if metadata:
        check_fields(metadata, {"user_id": STR}, "metadata.", 2)
    for i, tool in enumerate(body.get("tools") or ()):
        check_fields(tool, _TOOL, f"tools[{i}].", 3)
    msgs = body.get("messages")
    if type(msgs) is not list:
        raise wrong_type("messages", "an array of messages", msgs)
    if not msgs:
        raise wrong_value("messages", "must contain at least one message")
    for i, m in enumerate(msgs):
        if (type(m) is dict and len(m) == 2 and type(m.get("content")) is str
                and type(m.get("role")) is str):
            continue  # a role and a string: nothing more to look at, nothing nested
        at = f"messages[{i}]"
        if type(m) is not dict:
            raise wrong_type(at, "an object", m)
        require(m, "role", STR, at + ".")
        check_fields(m, _MESSAGE, at + ".", 3)
        content = m.get("content")
        if type(content) is not str:
            _blocks(content, at + ".content", 4)


def _blocks(content: Any, where: str, depth: int) -> None:
    """Content blocks (an array at `depth`): objects of a `type`, with the fields of the
    types tollway reads."""
    for k, block in enumerate(objects(content, where, "content blocks")):
        at = f"{where}[{k}]"
        kind = require(block, "type", STR, at + ".")
        check_fields(block, _BLOCKS.get(kind, _ANY_BLOCK), at + ".", depth + 1)
        if kind == "text":
            require(block, "text", STR, at + ".")
        elif kind == "tool_result":
            inner = block.get("content")
            if inner is not None and type(inner) is not str:
                _blocks(inner, at + ".content", depth + 2)
