"""OpenAI chat completions -> Gemini `generateContent` requests (the Generative Language API
and Vertex AI take the same body).

Written from Google's reference for `GenerateContentRequest`: `contents` of `user` and `model`
turns made of parts (`text`, `inlineData`, `fileData`, `functionCall`, `functionResponse`),
`systemInstruction`, `tools[].functionDeclarations`, `toolConfig.functionCallingConfig` and
`generationConfig`. An Anthropic Messages request reaches this through `messages_to_chat`
first. A field Gemini has no counterpart for is a 400 naming it, never silently dropped.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from tollway.protocols.translate._common import parse_arguments
from tollway.protocols.translate._parts import content_parts, push_turn
from tollway.protocols.translate.errors import TranslationError

# Request fields with no Gemini counterpart: a 400 naming them.
_UNSUPPORTED = ("logit_bias", "logprobs", "top_logprobs", "audio", "prediction",
                "web_search_options", "functions", "function_call")
_EFFORT_BUDGET = {"minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
# JSON Schema keywords Gemini's OpenAPI-subset `parameters` rejects; the whole schema goes
# in `parametersJsonSchema` instead when it uses them.
_SCHEMA_EXTRAS = ("additionalProperties", "$schema", "$defs", "$ref", "definitions",
                  "oneOf", "allOf", "not", "const", "patternProperties")


def chat_to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """The Gemini request for an OpenAI chat completions body (the model is in the URL)."""
    for name in _UNSUPPORTED:
        if body.get(name) not in (None, False):
            raise TranslationError(f"`{name}` has no Gemini counterpart", name)
    modalities = body.get("modalities")
    if modalities not in (None, ["text"]):
        raise TranslationError("only text output can be asked of a Gemini model through "
                               "chat completions", "modalities")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TranslationError("`messages` must be a non-empty array", "messages")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for functionResponse
    for i, m in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(m, dict):
            raise TranslationError(f"{at} must be an object", at)
        role = m.get("role")
        if role in ("system", "developer"):
            system += [p for p in _parts(m.get("content"), at, text_only=True)]
        elif role == "user":
            _push(contents, "user", _parts(m.get("content"), at))
        elif role == "assistant":
            parts = _parts(m.get("content"), at, text_only=True) if m.get("content") else []
            for j, call in enumerate(m.get("tool_calls") or ()):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise TranslationError(f"{at}.tool_calls[{j}] needs function.name",
                                           f"{at}.tool_calls")
                if isinstance(call.get("id"), str):
                    names[call["id"]] = fn["name"]
                parts.append({"functionCall": {"name": fn["name"],
                                               "args": parse_arguments(fn.get("arguments"))}})
            _push(contents, "model", parts)
        elif role == "tool":
            call_id = m.get("tool_call_id")
            name = names.get(call_id) if isinstance(call_id, str) else None
            if name is None:
                raise TranslationError(f"{at} answers tool call {call_id!r}, which no earlier "
                                       "assistant message made", f"{at}.tool_call_id")
            text = "".join(p["text"] for p in _parts(m.get("content"), at, text_only=True))
            result = parse_arguments(text) if text.lstrip().startswith("{") else {}
            if not result or "_raw" in result:
                result = {"content": text}
            _push(contents, "user", [{"functionResponse": {"name": name, "response": result}}])
        else:
            raise TranslationError(f"{at}.role {role!r} cannot be sent to Gemini", f"{at}.role")
    if not contents:
        raise TranslationError("a Gemini request needs at least one user or assistant "
                               "message", "messages")
    req: dict[str, Any] = {"contents": contents}
    if system:
        req["systemInstruction"] = {"parts": system}
    _tools(body, req)
    config = _generation(body)
    if config:
        req["generationConfig"] = config
    return req


def _push(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    push_turn(contents, role, parts, "parts")


def _parts(content: Any, at: str, text_only: bool = False) -> list[dict[str, Any]]:
    return content_parts(content, at, "Gemini", text_only, _image)


def _image(spec: Any, at: str) -> dict[str, Any]:
    url = spec.get("url") if isinstance(spec, dict) else None
    if not isinstance(url, str) or not url:
        raise TranslationError(f"{at}.image_url.url must be a URL", f"{at}.image_url")
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        mime, _, enc = head.partition(";")
        if not sep or enc != "base64" or not mime:
            raise TranslationError(f"{at}: a data URL must be base64 with a media type",
                                   f"{at}.image_url")
        return {"inlineData": {"mimeType": mime, "data": data}}
    mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _tools(body: dict[str, Any], req: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools:
        decls = []
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" \
                else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise TranslationError(f"tools[{i}] must be a function tool with a name",
                                       f"tools[{i}]")
            decl: dict[str, Any] = {"name": fn["name"]}
            if isinstance(fn.get("description"), str):
                decl["description"] = fn["description"]
            params = fn.get("parameters")
            if isinstance(params, dict) and params:
                key = "parametersJsonSchema" if _needs_json_schema(params) else "parameters"
                decl[key] = params
            decls.append(decl)
        req["tools"] = [{"functionDeclarations": decls}]
    choice = body.get("tool_choice")
    if choice is None:
        return
    mode: dict[str, Any]
    if choice == "auto":
        mode = {"mode": "AUTO"}
    elif choice == "none":
        mode = {"mode": "NONE"}
    elif choice == "required":
        mode = {"mode": "ANY"}
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"),
                                                 str):
        mode = {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
    else:
        raise TranslationError("tool_choice must be auto, none, required or a function",
                               "tool_choice")
    req["toolConfig"] = {"functionCallingConfig": mode}


def _needs_json_schema(schema: Any) -> bool:
    if isinstance(schema, dict):
        return any(k in schema for k in _SCHEMA_EXTRAS) or any(
            _needs_json_schema(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_needs_json_schema(v) for v in schema)
    return False


def _generation(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"),
                         ("presence_penalty", "presencePenalty"),
                         ("frequency_penalty", "frequencyPenalty"), ("seed", "seed"),
                         ("n", "candidateCount")):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        kind = fmt.get("type")
        if kind == "json_object":
            config["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            config["responseMimeType"] = "application/json"
            if isinstance(schema, dict):
                config["responseJsonSchema"] = schema
        elif kind != "text":
            raise TranslationError(f"response_format {kind!r} has no Gemini counterpart",
                                   "response_format")
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in _EFFORT_BUDGET:
            raise TranslationError(f"reasoning_effort {effort!r} is not one of "
                                   f"{', '.join(_EFFORT_BUDGET)}", "reasoning_effort")
        config["thinkingConfig"] = {"thinkingBudget": _EFFORT_BUDGET[effort]}
    return config
