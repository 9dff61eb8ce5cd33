"""OpenAI chat completions request -> Anthropic Messages request.

The reverse direction lives in ``requests_chat``; both are re-exported here. The output is
built fresh (the input body is never mutated), and anything Anthropic would reject is either
rewritten into what it accepts or refused with a :class:`TranslationError` that names the
field, so the client gets a 400 it can act on rather than a confusing upstream error.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from tollway.protocols.translate._common import parse_arguments, tool_id
from tollway.protocols.translate.errors import TranslationError
from tollway.protocols.translate.requests_chat import messages_to_chat

__all__ = ["TranslationError", "chat_to_messages", "messages_to_chat"]

Block = dict[str, Any]


def chat_to_messages(body: dict[str, Any], model: str, default_max_tokens: int = 4096,
                     ) -> dict[str, Any]:
    """Translate an OpenAI chat request for an Anthropic model (``model`` = upstream id)."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise TranslationError("'messages' must be a non-empty array", "messages")
    _reject_unsupported(body)
    system: list[Block] = []
    out: list[dict[str, Any]] = []
    used_tools: dict[str, None] = {}  # names of tools called in the history, in order
    has_tool_blocks = False
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise TranslationError(f"{where} must be an object", where)
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            system.extend(_blocks(content, where, text_only=True))
        elif role == "user":
            _push(out, "user", _blocks(content, where))
        elif role == "assistant":
            blocks = _blocks(content, where, text_only=True)
            calls = m.get("tool_calls") or ()
            for j, call in enumerate(calls):
                block = _tool_use(call, f"{where}.tool_calls[{j}]")
                used_tools[block["name"]] = None
                blocks.append(block)
            has_tool_blocks = has_tool_blocks or bool(calls)
            _push(out, "assistant", blocks)
        elif role == "tool":
            has_tool_blocks = True
            _push(out, "user", [_tool_result(m, where)])
        elif role == "function":
            raise TranslationError(
                f"{where}: legacy 'function' messages cannot be sent to this model; "
                "use 'tool' messages", f"{where}.role")
        else:
            raise TranslationError(f"{where}: unsupported role {role!r}", f"{where}.role")
    if out:
        _tidy(out)
    if not out:
        raise TranslationError("'messages' must contain at least one non-empty user or "
                               "assistant message", "messages")

    req: dict[str, Any] = {"model": model, "messages": out,
                           "max_tokens": _max_tokens(body, default_max_tokens)}
    if system:
        only = system[0]
        req["system"] = only["text"] if len(system) == 1 and len(only) == 2 else system
    _sampling(body, req)
    _tools(body, req, used_tools if has_tool_blocks else None)
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        req["metadata"] = {"user_id": user}
    return req


def _reject_unsupported(body: dict[str, Any]) -> None:
    """Refuse features whose silent loss would change what the client gets back."""
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError("'n' must be 1: this model returns a single choice", "n")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        raise TranslationError(
            "response_format 'json_schema' is not supported for this model; describe the "
            "schema in the prompt, or define it as a tool and force it with tool_choice",
            "response_format")
    modalities = body.get("modalities")
    if body.get("audio") or (isinstance(modalities, list) and "audio" in modalities):
        raise TranslationError("audio output is not supported for this model", "modalities")
    if body.get("functions") or body.get("function_call"):
        raise TranslationError("legacy 'functions'/'function_call' are not supported for this "
                               "model; use 'tools' and 'tool_choice'", "functions")


def _push(out: list[dict[str, Any]], role: str, blocks: list[Block]) -> None:
    """Append a turn, merging it into the previous one: Anthropic wants roles to alternate."""
    if not blocks:
        return  # Anthropic rejects empty turns; merging the neighbours keeps alternation
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": blocks})


def _tidy(out: list[dict[str, Any]]) -> None:
    """Fix what merging and OpenAI's laxer rules leave behind."""
    for m in out:
        content = m["content"]
        if m["role"] != "user" or len(content) < 2:
            continue
        # tool_result blocks must open the turn that answers a tool_use; merged text goes after
        kinds = [b["type"] == "tool_result" for b in content]
        if any(kinds) and not all(kinds) and kinds != sorted(kinds, reverse=True):
            m["content"] = ([b for b, r in zip(content, kinds, strict=True) if r]
                            + [b for b, r in zip(content, kinds, strict=True) if not r])
    last = out[-1]
    if last["role"] == "assistant":  # a prefill may not end in whitespace
        content = last["content"]
        tail = content[-1]
        if tail["type"] == "text":
            text = tail["text"].rstrip()
            if text:
                content[-1] = {**tail, "text": text}
            else:
                content.pop()
                if not content:
                    out.pop()


def _blocks(content: Any, where: str, text_only: bool = False) -> list[Block]:
    """Message content (string or parts) as Anthropic blocks, empty text dropped."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if content is None:
        return []
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or an array of parts",
                               f"{where}.content")
    out: list[Block] = []
    for k, part in enumerate(content):
        at = f"{where}.content[{k}]"
        if not isinstance(part, dict):
            raise TranslationError(f"{at} must be an object", at)
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if isinstance(text, str) and text:
                out.append(_cached({"type": "text", "text": text}, part))
        elif text_only:
            raise TranslationError(f"{at}: only text parts are allowed here", at)
        elif kind == "image_url":
            out.append(_cached(_image(part, at), part))
        elif kind == "file":
            out.append(_cached(_document(part, at), part))
        elif kind == "input_audio":
            raise TranslationError(f"{at}: audio input is not supported for this model", at)
        else:
            raise TranslationError(f"{at}: unsupported content part type {kind!r}", at)
    return out


def _cached(block: Block, part: dict[str, Any]) -> Block:
    """Keep a ``cache_control`` marker some OpenAI clients put on parts for Anthropic."""
    cc = part.get("cache_control")
    if isinstance(cc, dict):
        block["cache_control"] = cc
    return block


def _data_url(url: str, at: str) -> tuple[str, str]:
    """(media type, base64 payload) of a ``data:`` URL."""
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise TranslationError(f"{at}: data URLs must be base64-encoded", at)
    return header.split(";", 1)[0], data


def _image(part: dict[str, Any], at: str) -> Block:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url:
        raise TranslationError(f"{at}: image_url.url is required", at)
    if url.startswith("data:"):
        media, data = _data_url(url, at)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError(f"{at}: image_url.url must be an http(s) or data: URL", at)


def _document(part: dict[str, Any], at: str) -> Block:
    """A ``file`` part with inline data: PDFs and plain text are what Anthropic reads."""
    spec = part.get("file")
    if not isinstance(spec, dict) or not isinstance(spec.get("file_data"), str):
        raise TranslationError(f"{at}: only inline file_data is supported for this model "
                               "(file ids belong to the other provider)", at)
    data_url: str = spec["file_data"]
    if not data_url.startswith("data:"):
        data_url = "data:application/pdf;base64," + data_url  # bare base64, as OpenAI allows
    media, data = _data_url(data_url, at)
    if media == "application/pdf":
        block: Block = {"type": "document",
                        "source": {"type": "base64", "media_type": media, "data": data}}
    elif media.startswith("text/"):
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise TranslationError(f"{at}: file_data is not base64 UTF-8 text", at) from exc
        block = {"type": "document",
                 "source": {"type": "text", "media_type": "text/plain", "data": text}}
    else:
        raise TranslationError(f"{at}: files of type {media!r} are not supported", at)
    name = spec.get("filename")
    if isinstance(name, str) and name:
        block["title"] = name
    return block


def _tool_use(call: Any, at: str) -> Block:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        raise TranslationError(f"{at}: only function tool calls are supported", at)
    fn = call.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise TranslationError(f"{at}: function.name is required", at)
    return {"type": "tool_use", "id": tool_id(call.get("id")), "name": fn["name"],
            "input": parse_arguments(fn.get("arguments"))}


def _tool_result(m: dict[str, Any], where: str) -> Block:
    call_id = m.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError(f"{where}: tool_call_id is required", f"{where}.tool_call_id")
    block: Block = {"type": "tool_result", "tool_use_id": tool_id(call_id)}
    content = m.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content is not None:
        parts = _blocks(content, where)
        if parts:
            block["content"] = parts
    return block


def _max_tokens(body: dict[str, Any], default: int) -> int:
    value = body.get("max_completion_tokens")
    name = "max_completion_tokens"
    if value is None:
        value, name = body.get("max_tokens"), "max_tokens"
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TranslationError(f"'{name}' must be a positive integer", name)
    return value


def _sampling(body: dict[str, Any], req: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        req["temperature"] = min(max(float(temperature), 0.0), 1.0)  # Anthropic's range
    top_p = body.get("top_p")
    # Current Claude models refuse temperature and top_p together; temperature wins.
    if "temperature" not in req and isinstance(top_p, int | float) and not isinstance(
            top_p, bool):
        req["top_p"] = top_p
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else ()
    # Anthropic rejects empty and whitespace-only stop sequences.
    kept = [s for s in stops if isinstance(s, str) and s.strip()]
    if kept:
        req["stop_sequences"] = kept
    if body.get("stream") is True:
        req["stream"] = True


def _tools(body: dict[str, Any], req: dict[str, Any], history: dict[str, None] | None) -> None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    out: list[Block] = []
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = {(t.get("function") or {}).get("name") for t in allowed.get("tools") or ()
                 if isinstance(t, dict)}
        tools = [t for t in tools or () if isinstance(t, dict)
                 and (t.get("function") or {}).get("name") in names]
        choice = "required" if allowed.get("mode") == "required" else "auto"
    for i, tool in enumerate(tools or ()):
        at = f"tools[{i}]"
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function":
            raise TranslationError(f"{at}: only function tools are supported for this model", at)
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError(f"{at}: function.name is required", at)
        params = fn.get("parameters")
        block: Block = {"name": name, "input_schema": params if isinstance(params, dict)
                        else {"type": "object", "properties": {}}}
        desc = fn.get("description")
        if isinstance(desc, str) and desc:
            block["description"] = desc
        out.append(_cached(block, tool))
    if not out:
        if history:
            # Anthropic refuses tool_use/tool_result blocks unless tools are defined; declare
            # the tools the history used (schema unknown) and forbid new calls.
            req["tools"] = [{"name": n, "description": "A tool used earlier in this "
                             "conversation.", "input_schema": {"type": "object"}}
                            for n in history]
            req["tool_choice"] = {"type": "none"}
        return
    req["tools"] = out
    tc: dict[str, Any] | None = None
    if choice == "auto":
        tc = {"type": "auto"}
    elif choice == "required":
        tc = {"type": "any"}
    elif choice == "none":
        tc = {"type": "none"}
    elif isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise TranslationError("tool_choice must be 'auto', 'required', 'none' or a "
                                   "function", "tool_choice")
        tc = {"type": "tool", "name": name}
    elif choice is not None:
        raise TranslationError(f"unsupported tool_choice {choice!r}", "tool_choice")
    if body.get("parallel_tool_calls") is False and (tc is None or tc["type"] != "none"):
        tc = {**(tc or {"type": "auto"}), "disable_parallel_tool_use": True}
    if tc is not None:
        req["tool_choice"] = tc
