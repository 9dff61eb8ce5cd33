"""Bedrock Converse answers -> OpenAI chat completions: whole responses, ConverseStream's
binary AWS event stream (`application/vnd.amazon.eventstream`, decoded with botocore's
parser: each frame's CRCs checked) and errors, so the relay reads chat from the first byte.

Usage: Converse's `inputTokens` excludes cache reads and writes (`cacheReadInputTokens`,
`cacheWriteInputTokens`), so the chat prompt count is their sum with the reads named as
cached; reasoning text (`reasoningContent`) is not the answer and is not passed on.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tollway.protocols.base import ERROR_TYPES_OPENAI
from tollway.protocols.translate._common import ChatChunks, count, new_id

FINISH = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls",
          "max_tokens": "length", "guardrail_intervened": "content_filter",
          "content_filtered": "content_filter", "model_context_window_exceeded": "length"}


def usage(u: Any) -> dict[str, Any]:
    u = u if isinstance(u, dict) else {}
    read, write = count(u.get("cacheReadInputTokens")), count(u.get("cacheWriteInputTokens"))
    prompt = count(u.get("inputTokens")) + read + write
    completion = count(u.get("outputTokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": read}}


def converse_to_chat(resp: dict[str, Any], model: str) -> dict[str, Any]:
    message = (resp.get("output") or {}).get("message") or {}
    text, calls = [], []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            text.append(block["text"])
        use = block.get("toolUse")
        if isinstance(use, dict) and isinstance(use.get("name"), str):
            calls.append({"id": str(use.get("toolUseId") or new_id("call_")), "type": "function",
                          "function": {"name": use["name"],
                                       "arguments": orjson.dumps(use.get("input") or {})
                                       .decode()}})
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(text) or
                           (None if calls else ""), "refusal": None}
    if calls:
        msg["tool_calls"] = calls
    return {"id": "chatcmpl-" + new_id(""), "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": msg, "logprobs": None,
                         "finish_reason": FINISH.get(str(resp.get("stopReason")), "stop")}],
            "usage": usage(resp.get("usage"))}


def bedrock_error_to_openai(status: int, body: bytes, kind: str | None = None) -> bytes:
    """{"message": ...} (the type in x-amzn-ErrorType or `__type`) -> the OpenAI shape."""
    message = f"upstream error {status}"
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        message = str(parsed.get("message") or parsed.get("Message") or message)
        kind = kind or parsed.get("__type")
    code = kind.split("#")[-1].split(":")[0] if isinstance(kind, str) else None
    return orjson.dumps({"error": {"message": message,
                                   "type": ERROR_TYPES_OPENAI.get(status, "api_error"),
                                   "code": code, "param": None}})


class ConverseToChatStream(ChatChunks):
    """ConverseStream's frames in, chat.completion.chunk SSE out (usage and [DONE] from its
    `metadata` event, which comes after `messageStop`)."""

    def __init__(self, model: str) -> None:
        from botocore.eventstream import EventStreamBuffer

        super().__init__(model)
        self.buffer = EventStreamBuffer()
        self.tools: dict[int, int] = {}  # content block -> tool call index
        self.stopped: str | None = None
        self.done = False

    def feed(self, net: bytes) -> bytes:
        self.buffer.add_data(net)
        out = []
        for frame in self.buffer:
            headers = frame.headers
            try:
                payload = orjson.loads(frame.payload) if frame.payload else {}
            except orjson.JSONDecodeError:
                continue
            if headers.get(":message-type") == "exception":
                kind = str(headers.get(":exception-type", "exception"))
                message = payload.get("message", kind) if isinstance(payload, dict) else kind
                out.append(b"data: " + orjson.dumps({"error": {
                    "message": f"{kind}: {message}", "type": "upstream_error",
                    "code": kind, "param": None}}) + b"\n\n")
                continue
            if isinstance(payload, dict):
                out.append(self._event(str(headers.get(":event-type", "")), payload))
        return b"".join(out)

    def finish(self) -> bytes:
        return b""  # the metadata event ends a complete stream; a cut one gets nothing

    def _event(self, kind: str, ev: dict[str, Any]) -> bytes:
        if kind == "messageStart":
            return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "logprobs": None, "finish_reason": None}])
        if kind == "contentBlockStart":
            use = (ev.get("start") or {}).get("toolUse")
            if isinstance(use, dict):
                n = self.tools[ev.get("contentBlockIndex", 0)] = len(self.tools)
                return self._delta({"tool_calls": [{
                    "index": n, "id": str(use.get("toolUseId") or new_id("call_")),
                    "type": "function",
                    "function": {"name": str(use.get("name", "")), "arguments": ""}}]})
            return b""
        if kind == "contentBlockDelta":
            delta = ev.get("delta") or {}
            if isinstance(delta.get("text"), str):
                return self._delta({"content": delta["text"]})
            use = delta.get("toolUse")
            n = self.tools.get(ev.get("contentBlockIndex", 0))
            if isinstance(use, dict) and n is not None and isinstance(use.get("input"), str):
                return self._delta({"tool_calls": [{"index": n, "function": {
                    "arguments": use["input"]}}]})
            return b""
        if kind == "messageStop":
            self.stopped = FINISH.get(str(ev.get("stopReason")), "stop")
            return self._chunk([{"index": 0, "delta": {}, "logprobs": None,
                                 "finish_reason": self.stopped}])
        if kind == "metadata" and self.stopped is not None and not self.done:
            self.done = True
            return self._chunk([], usage(ev.get("usage"))) + b"data: [DONE]\n\n"
        return b""


