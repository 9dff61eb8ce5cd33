"""Gemini answers -> OpenAI chat completions: whole responses, `streamGenerateContent?alt=sse`
streams and errors, so everything after the wire (usage, tool calls, the client's own
dialect, Anthropic included through chat_response_to_messages) reads chat.

Usage: Gemini's `promptTokenCount` includes cached content and `toolUsePromptTokenCount` is
input too; thinking (`thoughtsTokenCount`) is billed as output, so it is part of
`completion_tokens` and named in `completion_tokens_details.reasoning_tokens`. Thought parts
(`thought: true`) are the model's reasoning summary, not its answer: not passed on.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tollway.protocols.base import ERROR_TYPES_OPENAI
from tollway.protocols.sse import EventSplitter, event_data, events
from tollway.protocols.translate._common import ChatChunks, count, new_id

FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
          "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
          "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
          "IMAGE_SAFETY": "content_filter", "LANGUAGE": "content_filter",
          "MALFORMED_FUNCTION_CALL": "stop", "OTHER": "stop"}


def usage(meta: Any) -> dict[str, Any]:
    m = meta if isinstance(meta, dict) else {}
    prompt = count(m.get("promptTokenCount")) + count(m.get("toolUsePromptTokenCount"))
    thoughts = count(m.get("thoughtsTokenCount"))
    completion = count(m.get("candidatesTokenCount")) + thoughts
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": count(m.get("cachedContentTokenCount"))},
            "completion_tokens_details": {"reasoning_tokens": thoughts}}


def gemini_to_chat(resp: dict[str, Any], model: str) -> dict[str, Any]:
    choices = []
    for n, cand in enumerate(resp.get("candidates") or ()):
        if not isinstance(cand, dict):
            continue
        text, calls = _content(cand.get("content"))
        message: dict[str, Any] = {"role": "assistant", "content": text or None,
                                   "refusal": None}
        if calls:
            message["tool_calls"] = [
                {"id": new_id("call_"), "type": "function",
                 "function": {"name": c["name"], "arguments": orjson.dumps(c.get("args") or {})
                              .decode()}} for c in calls]
        elif not text:
            message["content"] = ""
        choices.append({"index": cand.get("index", n), "message": message,
                        "logprobs": None, "finish_reason": _finish(cand, bool(calls))})
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
        choices = [{"index": 0, "message": {"role": "assistant", "content": "",
                                            "refusal": None},
                    "logprobs": None, "finish_reason": "content_filter"}]
    return {"id": "chatcmpl-" + str(resp.get("responseId") or new_id("")),
            "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(resp.get("usageMetadata"))}


def gemini_error_to_openai(status: int, body: bytes) -> bytes:
    """{"error": {"code", "message", "status"}} -> the OpenAI error shape."""
    message, code = f"upstream error {status}", None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        err = parsed[0].get("error")  # streamGenerateContent without alt=sse
    if isinstance(err, dict):
        message = str(err.get("message") or message)
        code = err.get("status")
    return orjson.dumps({"error": {"message": message,
                                   "type": ERROR_TYPES_OPENAI.get(status, "api_error"),
                                   "code": code, "param": None}})


class GeminiToChatStream(ChatChunks):
    """`streamGenerateContent?alt=sse` bytes in, chat.completion.chunk SSE out: a role chunk
    first, text deltas, each function call as one tool-call delta, the finish reason, then
    a usage chunk and [DONE] when the upstream closes the stream (Gemini sends no end
    marker; every event carries the usage so far, the last one the total)."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.splitter = EventSplitter()  # Gemini's SSE, whatever the network pieces
        self.started = False
        self.calls = 0
        self.finished = False
        self.meta: Any = None
        self.done = False

    def feed(self, net: bytes) -> bytes:
        blob = self.splitter.feed(net)
        if not blob:
            return b""
        out = []
        for ev in events(blob):
            try:
                data = orjson.loads(event_data(ev)[1])
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict):
                out.append(self._event(data))
        return b"".join(out)

    def finish(self) -> bytes:
        """The upstream closed the stream: usage and [DONE], if it ever finished."""
        if self.done or not self.finished:
            return b""  # cut short: the relay says so; no [DONE] that would hide it
        self.done = True
        return self._chunk([], usage(self.meta)) + b"data: [DONE]\n\n"

    def _event(self, data: dict[str, Any]) -> bytes:
        out = []
        if data.get("usageMetadata") is not None:
            self.meta = data["usageMetadata"]
        if not self.started:
            self.started = True
            out.append(self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "logprobs": None, "finish_reason": None}]))
        for cand in data.get("candidates") or ():
            if not isinstance(cand, dict):
                continue
            text, calls = _content(cand.get("content"))
            if text:
                out.append(self._chunk([{"index": 0, "delta": {"content": text},
                                         "logprobs": None, "finish_reason": None}]))
            for c in calls:
                delta = {"tool_calls": [{"index": self.calls, "id": new_id("call_"),
                                         "type": "function", "function": {
                                             "name": c["name"],
                                             "arguments": orjson.dumps(c.get("args") or {})
                                             .decode()}}]}
                self.calls += 1
                out.append(self._chunk([{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": None}]))
            if cand.get("finishReason"):
                self.finished = True
                out.append(self._chunk([{"index": 0, "delta": {}, "logprobs": None,
                                         "finish_reason": _finish(cand, self.calls > 0)}]))
        if not data.get("candidates") and (data.get("promptFeedback") or {}).get("blockReason"):
            self.finished = True
            out.append(self._chunk([{"index": 0, "delta": {}, "logprobs": None,
                                     "finish_reason": "content_filter"}]))
        return b"".join(out)


def _content(content: Any) -> tuple[str, list[dict[str, Any]]]:
    parts = content.get("parts") if isinstance(content, dict) else None
    text, calls = [], []
    for p in parts or ():
        if not isinstance(p, dict) or p.get("thought") is True:
            continue
        if isinstance(p.get("text"), str):
            text.append(p["text"])
        fc = p.get("functionCall")
        if isinstance(fc, dict) and isinstance(fc.get("name"), str):
            calls.append(fc)
    return "".join(text), calls


def _finish(cand: dict[str, Any], calls: bool) -> str | None:
    reason = cand.get("finishReason")
    if reason is None:
        return None
    if calls and reason == "STOP":
        return "tool_calls"
    return FINISH.get(str(reason), "stop")


