"""Anthropic Messages request -> OpenAI chat completions request.

Aimed at "OpenAI-compatible" servers as much as at OpenAI itself, so the output sticks to
the widely implemented subset: string system and assistant content, ``max_tokens``, text
and image_url parts, function tools.
"""

from __future__ import annotations

from typing import Any

from tollway.protocols.translate._common import dumps
from tollway.protocols.translate.errors import TranslationError

Message = dict[str, Any]

#: Blocks that only mean something to Anthropic (reasoning, server-side tools): dropped.
_DROPPED = frozenset({"thinking", "redacted_thinking", "server_tool_use", "mcp_tool_use",
                      "mcp_tool_result", "container_upload"})


def _dropped(kind: Any) -> bool:
    return isinstance(kind, str) and (kind in _DROPPED or kind.endswith("_tool_result"))


def messages_to_chat(body: dict[str, Any], model: str) -> dict[str, Any]:
    """Translate an Anthropic Messages request for an OpenAI-compatible chat model."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise TranslationError("messages: Field required", "messages")
    if body.get("mcp_servers"):
        raise TranslationError("mcp_servers are not supported for this model", "mcp_servers")
    out: list[Message] = []
    system = _system_text(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    for i, m in enumerate(msgs):
        where = f"messages.{i}"
        if not isinstance(m, dict):
            raise TranslationError(f"{where}: Input should be an object", where)
        role = m.get("role")
        if role == "user":
            _user(m.get("content"), where, out)
        elif role == "assistant":
            _assistant(m.get("content"), where, out)
        else:
            raise TranslationError(f"{where}.role: Input should be 'user' or 'assistant'", where)

    req: dict[str, Any] = {"model": model, "messages": out}
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        req["max_tokens"] = max_tokens
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            req[key] = value
    stops = body.get("stop_sequences")
    if isinstance(stops, list) and stops:
        req["stop"] = [s for s in stops if isinstance(s, str)]
    if body.get("stream") is True:
        req["stream"] = True
        req["stream_options"] = {"include_usage": True}
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user, str) and user:
        req["user"] = user
    _tools(body, req)
    _output_format(body, req)
    return req


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n\n".join(b["text"] for b in system
                           if isinstance(b, dict) and isinstance(b.get("text"), str) and b["text"])
    return ""


def _user(content: Any, where: str, out: list[Message]) -> None:
    """One user turn: its tool results become ``tool`` messages, ahead of the rest."""
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content: Input should be a string or a list", where)
    parts: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []
    for k, block in enumerate(content):
        at = f"{where}.content.{k}"
        if not isinstance(block, dict):
            raise TranslationError(f"{at}: Input should be an object", at)
        kind = block.get("type")
        if kind == "tool_result":
            out.append(_tool_message(block, at, tool_images))
        elif _dropped(kind):
            continue
        else:
            part = _part(block, at)
            if part is not None:
                parts.append(part)
    # OpenAI tool messages carry text only: images a tool returned follow as a user turn.
    parts = tool_images + parts
    if not parts:
        return
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    else:
        out.append({"role": "user", "content": parts})


def _part(block: dict[str, Any], at: str) -> dict[str, Any] | None:
    """A user content block as an OpenAI content part (None for empty text)."""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return {"type": "text", "text": text} if isinstance(text, str) and text else None
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _source_url(block, at)}}
    if kind == "document":
        return _document(block, at)
    raise TranslationError(f"{at}: content blocks of type {kind!r} are not supported for this "
                           "model", at)


def _source_url(block: dict[str, Any], at: str) -> str:
    source = block.get("source")
    if isinstance(source, dict):
        if source.get("type") == "base64":
            return f"data:{source.get('media_type')};base64,{source.get('data')}"
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return str(source["url"])
    raise TranslationError(f"{at}.source: only base64 and url sources are supported for this "
                           "model", at)


def _document(block: dict[str, Any], at: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        source = {}
    kind = source.get("type")
    title = block.get("title")
    if kind == "text":
        return {"type": "text", "text": str(source.get("data", ""))}
    if kind == "content" and isinstance(source.get("content"), str):
        return {"type": "text", "text": source["content"]}
    if kind == "base64":
        file: dict[str, Any] = {"file_data": _source_url(block, at)}
        file["filename"] = title if isinstance(title, str) and title else "document.pdf"
        return {"type": "file", "file": file}
    raise TranslationError(f"{at}.source: only base64 and text documents are supported for "
                           "this model", at)


def _tool_message(block: dict[str, Any], at: str, images: list[dict[str, Any]]) -> Message:
    """A tool_result as a ``tool`` message with string content, as every server accepts."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str):
        raise TranslationError(f"{at}.tool_use_id: Field required", at)
    content = block.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, inner in enumerate(content):
            if not isinstance(inner, dict):
                continue
            if inner.get("type") == "text" and isinstance(inner.get("text"), str):
                texts.append(inner["text"])
            elif inner.get("type") in ("image", "document"):
                part = _part(inner, f"{at}.content.{k}")
                if part is not None:
                    images.append(part)
        text = "\n".join(texts)
    else:
        text = ""
    if block.get("is_error"):
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _assistant(content: Any, where: str, out: list[Message]) -> None:
    if isinstance(content, str):
        out.append({"role": "assistant", "content": content})
        return
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content: Input should be a string or a list", where)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for k, block in enumerate(content):
        if not isinstance(block, dict):
            raise TranslationError(f"{where}.content.{k}: Input should be an object", where)
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": dumps(block.get("input") or {}).decode()}})
        elif _dropped(kind):
            continue
        else:
            raise TranslationError(f"{where}.content.{k}: assistant blocks of type {kind!r} are "
                                   "not supported for this model", where)
    text = "".join(texts)
    if not text and not calls:
        return  # e.g. a turn that only held thinking
    msg: Message = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = calls
    out.append(msg)


def _tools(body: dict[str, Any], req: dict[str, Any]) -> None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return  # OpenAI refuses tool_choice and parallel_tool_calls without tools
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise TranslationError(f"tools.{i}: Input should be an object", "tools")
        kind = tool.get("type")
        name = tool.get("name")
        if kind not in (None, "custom") or not isinstance(name, str):
            raise TranslationError(f"tools.{i}: server tools ({kind}) are not supported for this "
                                   "model; only custom tools with an input_schema are", "tools")
        fn: dict[str, Any] = {"name": name}
        desc = tool.get("description")
        if isinstance(desc, str) and desc:
            fn["description"] = desc
        fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        if tool.get("strict") is True:
            fn["strict"] = True
        out.append({"type": "function", "function": fn})
    req["tools"] = out
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "auto":
        req["tool_choice"] = "auto"
    elif kind == "any":
        req["tool_choice"] = "required"
    elif kind == "none":
        req["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        req["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise TranslationError(f"tool_choice: unsupported type {kind!r}", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        req["parallel_tool_calls"] = False


def _output_format(body: dict[str, Any], req: dict[str, Any]) -> None:
    """Anthropic structured outputs (``output_format`` / ``output_config.format``)."""
    fmt = body.get("output_format")
    config = body.get("output_config")
    if fmt is None and isinstance(config, dict):
        fmt = config.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        req["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "output", "schema": fmt.get("schema") or {}, "strict": True}}
