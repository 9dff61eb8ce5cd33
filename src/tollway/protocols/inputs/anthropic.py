"""The Anthropic dialect's requests as tollway reads them: messages and count_tokens,
checked against the shapes of Anthropic's API reference."""

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
    Spec,
    check_fields,
    objects,
    require,
    wrong_type,
    wrong_value,
)

_MESSAGES: dict[str, Spec] = {
    "max_tokens": COUNT, "stream": BOOL, "metadata": OBJECT, "stop_sequences": STRS,
    "temperature": NUMBER, "top_p": NUMBER, "top_k": NUMBER, "tools": OBJECTS,
    "tool_choice": OBJECT, "thinking": OBJECT, "output_format": OBJECT,
    "output_config": OBJECT, "mcp_servers": OBJECTS, "service_tier": STR,
}
_TOOL_USE: dict[str, Spec] = {"id": STR, "name": STR, "input": OBJECT}
_SOURCED = frozenset({"image", "document"})


def validate(endpoint: str, body: dict[str, Any]) -> None:
    """Raise a 400 naming the first field tollway reads that has the wrong type."""
    check_fields(body, _MESSAGES)
    system = body.get("system")
    if system is not None and type(system) is not str:
        _blocks(system, "system")
    metadata = body.get("metadata")
    if metadata:
        check_fields(metadata, {"user_id": STR}, "metadata.")
    for i, tool in enumerate(body.get("tools") or ()):
        check_fields(tool, {"name": STR, "type": STR, "input_schema": OBJECT},
                     f"tools[{i}].")
    msgs = body.get("messages")
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
        if type(content) is not str:
            _blocks(content, f"messages[{i}].content")


def _blocks(content: Any, where: str) -> None:
    """Content blocks: objects of a `type`; the fields of the types tollway reads."""
    for k, block in enumerate(objects(content, where, "content blocks")):
        at = f"{where}[{k}]"
        kind = block.get("type")
        if type(kind) is not str:
            raise wrong_type(f"{at}.type", "a string", kind)
        if kind == "text":
            require(block, "text", STR, at + ".")
        elif kind == "tool_use":
            check_fields(block, _TOOL_USE, at + ".")
        elif kind == "tool_result":
            check_fields(block, {"tool_use_id": STR, "is_error": BOOL}, at + ".")
            inner = block.get("content")
            if inner is not None and type(inner) is not str:
                _blocks(inner, f"{at}.content")
        elif kind in _SOURCED:
            source = block.get("source")
            if source is not None and type(source) is not dict:
                raise wrong_type(f"{at}.source", "an object", source)
