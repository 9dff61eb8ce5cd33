"""OpenAI chat completions -> Amazon Bedrock Converse requests (`/model/{id}/converse` and
`/converse-stream`; one body for every model family Bedrock serves, Claude included).

Written from the Converse API reference: `messages` of `user` and `assistant` turns whose
content blocks are `text`, `image` (`format` + `source.bytes`, base64 in JSON), `toolUse`
and `toolResult`; `system` blocks; `inferenceConfig`; `toolConfig` with `toolSpec`s and a
`toolChoice`. A field Converse has no counterpart for is a 400 naming it.
"""

from __future__ import annotations

from typing import Any

from tollway.protocols.translate._common import parse_arguments
from tollway.protocols.translate._parts import content_parts, push_turn
from tollway.protocols.translate.errors import TranslationError

_UNSUPPORTED = ("logit_bias", "logprobs", "top_logprobs", "audio", "prediction",
                "web_search_options", "functions", "function_call", "n", "seed",
                "presence_penalty", "frequency_penalty", "response_format",
                "reasoning_effort")
_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif",
            "image/webp": "webp"}


def chat_to_converse(body: dict[str, Any]) -> dict[str, Any]:
    for name in _UNSUPPORTED:
        if body.get(name) not in (None, False) and not (name == "n" and body[name] == 1):
            raise TranslationError(f"`{name}` has no Bedrock Converse counterpart", name)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TranslationError("`messages` must be a non-empty array", "messages")
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(m, dict):
            raise TranslationError(f"{at} must be an object", at)
        role = m.get("role")
        if role in ("system", "developer"):
            system += _blocks(m.get("content"), at, text_only=True)
        elif role == "user":
            _push(out, "user", _blocks(m.get("content"), at))
        elif role == "assistant":
            blocks = _blocks(m.get("content"), at, text_only=True) if m.get("content") else []
            for j, call in enumerate(m.get("tool_calls") or ()):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) \
                        or not isinstance(call.get("id"), str):
                    raise TranslationError(f"{at}.tool_calls[{j}] needs an id and "
                                           "function.name", f"{at}.tool_calls")
                blocks.append({"toolUse": {"toolUseId": call["id"], "name": fn["name"],
                                           "input": parse_arguments(fn.get("arguments"))}})
            _push(out, "assistant", blocks)
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise TranslationError(f"{at}.tool_call_id must be a string",
                                       f"{at}.tool_call_id")
            text = "".join(b["text"] for b in _blocks(m.get("content"), at, text_only=True))
            _push(out, "user", [{"toolResult": {"toolUseId": call_id,
                                                "content": [{"text": text}],
                                                "status": "success"}}])
        else:
            raise TranslationError(f"{at}.role {role!r} cannot be sent to Bedrock",
                                   f"{at}.role")
    if not out or out[0]["role"] != "user":
        raise TranslationError("a Converse conversation starts with a user message",
                               "messages")
    req: dict[str, Any] = {"messages": out}
    if system:
        req["system"] = system
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        config["maxTokens"] = limit
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if config:
        req["inferenceConfig"] = config
    _tools(body, req)
    return req


def _push(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    push_turn(out, role, blocks, "content")


def _blocks(content: Any, at: str, text_only: bool = False) -> list[dict[str, Any]]:
    return content_parts(content, at, "Bedrock", text_only, _image)


def _image(spec: Any, where: str) -> dict[str, Any]:
    url = spec.get("url") if isinstance(spec, dict) else None
    if not isinstance(url, str) or not url.startswith("data:"):
        raise TranslationError(f"{where}: Bedrock takes images as data URLs, not links",
                               where)
    head, _, data = url[5:].partition(",")
    mime = head.split(";", 1)[0]
    if mime not in _FORMATS or ";base64" not in head:
        raise TranslationError(f"{where}: a base64 png, jpeg, gif or webp image", where)
    return {"image": {"format": _FORMATS[mime], "source": {"bytes": data}}}


def _tools(body: dict[str, Any], req: dict[str, Any]) -> None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools:
        return
    specs = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise TranslationError(f"tools[{i}] must be a function tool with a name",
                                   f"tools[{i}]")
        spec: dict[str, Any] = {"name": fn["name"], "inputSchema": {
            "json": fn.get("parameters") or {"type": "object", "properties": {}}}}
        if isinstance(fn.get("description"), str):
            spec["description"] = fn["description"]
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if choice in (None, "auto"):
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice == "none":
        return  # Converse has no "none": the tools are simply not offered
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"),
                                                 str):
        config["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    else:
        raise TranslationError("tool_choice must be auto, none, required or a function",
                               "tool_choice")
    req["toolConfig"] = config
