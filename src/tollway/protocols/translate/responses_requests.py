"""OpenAI Responses API requests -> OpenAI chat completions, so `/v1/responses` reaches every
provider that is not OpenAI-compatible (Anthropic, Gemini, Vertex, Bedrock) through chat.

Written from the Responses API reference: `instructions`, `input` as a string or as items
(messages with `input_text` / `input_image` / `output_text` parts, `function_call` and
`function_call_output` items; `reasoning` items are the model's own and are dropped),
flattened function `tools`, `tool_choice`, `max_output_tokens`, `text.format`,
`reasoning.effort`. What lives on OpenAI's servers (`previous_response_id`, `conversation`,
built-in tools such as web or file search) has no counterpart elsewhere: a 400 naming it.
"""

from __future__ import annotations

from typing import Any

from tollway.protocols.translate.errors import TranslationError

_SERVER_SIDE = ("previous_response_id", "conversation", "prompt", "background",
                "include")
_COPIED = (("temperature", "temperature"), ("top_p", "top_p"),
           ("parallel_tool_calls", "parallel_tool_calls"), ("user", "user"),
           ("metadata", "metadata"), ("stream", "stream"))


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    for name in _SERVER_SIDE:
        if body.get(name) not in (None, [], False):
            raise TranslationError(f"`{name}` needs OpenAI's own Responses API: only "
                                   "OpenAI-compatible providers have it", name)
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    inp = body.get("input")
    if isinstance(inp, str):
        messages.append({"role": "user", "content": inp})
    elif isinstance(inp, list):
        for i, item in enumerate(inp):
            _item(item, f"input[{i}]", messages)
    else:
        raise TranslationError("`input` must be a string or an array of items", "input")
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    for ours, theirs in _COPIED:
        if body.get(ours) is not None:
            chat[theirs] = body[ours]
    if body.get("stream"):
        chat["stream_options"] = {"include_usage": True}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(
        body.get("reasoning"), dict) else None
    if effort is not None:
        chat["reasoning_effort"] = effort
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        chat["response_format"] = (
            {"type": "json_object"} if fmt["type"] == "json_object" else
            {"type": "json_schema", "json_schema": {
                "name": fmt.get("name", "output"), "schema": fmt.get("schema") or {},
                **({"strict": fmt["strict"]} if "strict" in fmt else {})}})
    _tools(body, chat)
    return chat


def _item(item: Any, at: str, out: list[dict[str, Any]]) -> None:
    if not isinstance(item, dict):
        raise TranslationError(f"{at} must be an object", at)
    kind = item.get("type", "message")
    if kind == "message" or ("role" in item and kind == "message"):
        role = item.get("role")
        if role not in ("user", "system", "developer", "assistant"):
            raise TranslationError(f"{at}.role {role!r} is not a message role", f"{at}.role")
        out.append({"role": role, "content": _content(item.get("content"), at)})
    elif kind == "function_call":
        call = {"id": item.get("call_id") or item.get("id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}
        last = out[-1] if out else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)  # a turn's parallel calls
        elif last is not None and last["role"] == "assistant" and not last.get("tool_calls"):
            last["tool_calls"] = [call]  # the text the model said before calling
        else:
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        out.append({"role": "tool", "tool_call_id": item.get("call_id"),
                    "content": output if isinstance(output, str) else _content(output, at)})
    elif kind == "reasoning":
        return  # the model's own reasoning summary: another provider cannot read it
    else:
        raise TranslationError(f"{at} ({kind!r}) has no counterpart outside OpenAI", at)


def _content(content: Any, at: str) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise TranslationError(f"{at}.content must be a string or an array", f"{at}.content")
    parts = []
    for j, part in enumerate(content):
        where = f"{at}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        else:
            raise TranslationError(f"{where} ({kind!r}) has no counterpart outside OpenAI",
                                   where)
    return parts


def _tools(body: dict[str, Any], chat: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools:
        out = []
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or t.get("type") != "function":
                kind = t.get("type") if isinstance(t, dict) else None
                raise TranslationError(f"tools[{i}] ({kind!r}) is one of OpenAI's built-in "
                                       "tools: only function tools reach other providers",
                                       f"tools[{i}]")
            fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if k in t}
            out.append({"type": "function", "function": fn})
        chat["tools"] = out
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice in ("auto", "none", "required"):
        chat["tool_choice"] = choice
    elif choice is not None:
        raise TranslationError("tool_choice must be auto, none, required or a function",
                               "tool_choice")
