"""OpenAI chat completions answers -> Responses API objects and stream events, for
`/v1/responses` served by a provider reached through chat.

A whole answer becomes a `response` object: a `message` item with its `output_text`, one
`function_call` item per call, `status` (`incomplete` with `max_output_tokens` when the
answer was cut), usage as `input_tokens` / `output_tokens` with their details. A stream
becomes the Responses events the official SDK reads: `response.created`, for each item
`response.output_item.added`, its deltas and its `done` events, and `response.completed`
with the whole response, each with its `sequence_number`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tollway.protocols.sse import event_data, events
from tollway.protocols.translate._common import count, new_id


def responses_usage(u: Any) -> dict[str, Any]:
    u = u if isinstance(u, dict) else {}
    cached = count((u.get("prompt_tokens_details") or {}).get("cached_tokens"))
    reasoning = count((u.get("completion_tokens_details") or {}).get("reasoning_tokens"))
    i, o = count(u.get("prompt_tokens")), count(u.get("completion_tokens"))
    return {"input_tokens": i, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": o, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": i + o}


def _shell(rid: str, model: str, created: int, status: str) -> dict[str, Any]:
    return {"id": rid, "object": "response", "created_at": created, "status": status,
            "model": model, "output": [], "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": [], "error": None, "incomplete_details": None, "usage": None}


def chat_response_to_responses(chat: dict[str, Any], model: str) -> dict[str, Any]:
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    finish = choice.get("finish_reason")
    resp = _shell("resp_" + new_id(""), model, int(chat.get("created") or time.time()),
                  "incomplete" if finish == "length" else "completed")
    if finish == "length":
        resp["incomplete_details"] = {"reason": "max_output_tokens"}
    text = message.get("content")
    if isinstance(text, str) and text:
        resp["output"].append(_message_item("msg_" + new_id(""), text, "completed"))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        resp["output"].append({"type": "function_call", "id": "fc_" + new_id(""),
                               "call_id": call.get("id"), "name": fn.get("name"),
                               "arguments": fn.get("arguments", ""), "status": "completed"})
    resp["usage"] = responses_usage(chat.get("usage"))
    return resp


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


class ChatToResponsesStream:
    """chat.completion.chunk events in, Responses events out."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.resp = _shell("resp_" + new_id(""), model, int(time.time()), "in_progress")
        self.seq = 0
        self.started = False
        self.text: str | None = None  # the message item's text so far, once it is open
        self.msg_id = "msg_" + new_id("")
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool index -> its item
        self.reason: str | None = None  # the chat finish_reason
        self.msg_index = 0
        self.done = False

    def feed(self, blob: bytes) -> bytes:
        out = []
        for ev in events(blob):
            data = event_data(ev)[1]
            if data.strip() == b"[DONE]":
                out.append(self._complete())
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict):
                out.append(self._chunk(chunk))
        return b"".join(out)

    def finish(self) -> bytes:
        return b""

    def _emit(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        out = []
        if not self.started:
            self.started = True
            out.append(self._emit("response.created", response=self.resp))
            out.append(self._emit("response.in_progress", response=self.resp))
        if isinstance(chunk.get("usage"), dict):
            self.resp["usage"] = responses_usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(self._text(content))
            for call in delta.get("tool_calls") or ():
                out.append(self._call(call))
            if choice.get("finish_reason"):
                self.reason = choice["finish_reason"]
        return b"".join(out)

    def _text(self, piece: str) -> bytes:
        out = []
        index = len(self.resp["output"]) + len(self.calls)
        if self.text is None:
            self.text = ""
            self.msg_index = index
            out.append(self._emit("response.output_item.added", output_index=index,
                                  item=_message_item(self.msg_id, "", "in_progress")
                                  | {"content": []}))
            out.append(self._emit("response.content_part.added", item_id=self.msg_id,
                                  output_index=index, content_index=0,
                                  part={"type": "output_text", "text": "", "annotations": []}))
        self.text += piece
        out.append(self._emit("response.output_text.delta", item_id=self.msg_id,
                              output_index=self.msg_index, content_index=0, delta=piece))
        return b"".join(out)

    def _call(self, call: dict[str, Any]) -> bytes:
        fn = call.get("function") or {}
        index = call.get("index", 0)
        item = self.calls.get(index)
        out = []
        if item is None:
            item = self.calls[index] = {
                "type": "function_call", "id": "fc_" + new_id(""), "call_id": call.get("id"),
                "name": fn.get("name"), "arguments": "", "status": "in_progress",
                "output_index": (1 if self.text is not None else 0) + len(self.calls)}
            out.append(self._emit("response.output_item.added",
                                  output_index=item["output_index"], item=_public(item)))
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            item["arguments"] += args
            out.append(self._emit("response.function_call_arguments.delta", item_id=item["id"],
                                  output_index=item["output_index"], delta=args))
        return b"".join(out)

    def _complete(self) -> bytes:
        if self.done:
            return b""
        self.done = True
        out = []
        output = []
        if self.text is not None:
            at = self.msg_index
            out.append(self._emit("response.output_text.done", item_id=self.msg_id,
                                  output_index=at, content_index=0, text=self.text))
            part = {"type": "output_text", "text": self.text, "annotations": []}
            out.append(self._emit("response.content_part.done", item_id=self.msg_id,
                                  output_index=at, content_index=0, part=part))
            item = _message_item(self.msg_id, self.text, "completed")
            out.append(self._emit("response.output_item.done", output_index=at, item=item))
            output.append(item)
        for item in self.calls.values():
            item["status"] = "completed"
            out.append(self._emit("response.function_call_arguments.done", item_id=item["id"],
                                  output_index=item["output_index"],
                                  arguments=item["arguments"]))
            out.append(self._emit("response.output_item.done",
                                  output_index=item["output_index"], item=_public(item)))
            output.append(_public(item))
        self.resp["output"] = output
        if self.reason == "length":
            self.resp["status"] = "incomplete"
            self.resp["incomplete_details"] = {"reason": "max_output_tokens"}
            out.append(self._emit("response.incomplete", response=self.resp))
        else:
            self.resp["status"] = "completed"
            out.append(self._emit("response.completed", response=self.resp))
        return b"".join(out)


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "output_index"}
