"""Streams translated event by event, as they arrive, in both directions.

``feed()`` takes a blob of complete SSE events (what ``sse.EventSplitter`` hands out) and
returns the client's bytes for it; the output only depends on the events, never on how they
were grouped into blobs. ``finish()`` is called when the upstream body ended: it closes a
stream whose end was merely implicit, and returns b"" for one cut short, leaving
``finished`` False so the caller sends its own stream error.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tollway.protocols.sse import event_data
from tollway.protocols.translate._common import (
    FINISH_TO_STOP,
    STOP_TO_FINISH,
    chat_usage,
    dumps,
    messages_usage,
    new_id,
    strip_prefix,
)
from tollway.protocols.translate.errors import anthropic_type, openai_error

_DONE = b"data: [DONE]\n\n"


def _payloads(blob: bytes) -> list[Any]:
    """The parsed ``data:`` of each event ([DONE] as the string "[DONE]"); pings skipped."""
    if b"\r" in blob:
        blob = blob.replace(b"\r\n", b"\n")
    out: list[Any] = []
    for ev in blob.split(b"\n\n"):
        if not ev or ev.startswith(b"event: ping"):
            continue
        data = event_data(ev)[1]
        if not data:
            continue
        if data == b"[DONE]":
            out.append("[DONE]")
            continue
        try:
            out.append(orjson.loads(data))
        except orjson.JSONDecodeError:
            continue  # not ours to repair; the client would choke on it too
    return out


class MessagesToChatStream:
    """Anthropic Messages events -> OpenAI ``chat.completion.chunk`` SSE."""

    __slots__ = ("_args", "_finish", "_prefix", "_suffix", "_tools", "_usage", "created",
                 "finished", "include_usage", "model")

    def __init__(self, model: str, include_usage: bool, created: int | None = None) -> None:
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.finished = False  # [DONE] (or an error) went out: nothing more to send
        self._prefix = b""  # the chunk's JSON up to "choices", fixed once the id is known
        # Like OpenAI with include_usage: "usage": null on every chunk but the last.
        self._suffix = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._tools: dict[int, int] = {}  # Anthropic block index -> tool-call ordinal
        self._args: dict[int, bool] = {}  # tool ordinal -> some arguments were sent
        self._usage: dict[str, Any] = {}
        self._finish: str | None = None

    def feed(self, blob: bytes) -> bytes:
        """Translate a blob of complete upstream events."""
        if self.finished:
            return b""
        out: list[bytes] = []
        for ev in _payloads(blob):
            if isinstance(ev, dict):
                self._event(ev, out)
                if self.finished:
                    break
        return b"".join(out)

    def finish(self) -> bytes:
        """Close a stream that reached message_delta but lost its message_stop."""
        if self.finished or self._finish is None:
            return b""
        out: list[bytes] = []
        self._close(out)
        return b"".join(out)

    def _event(self, ev: dict[str, Any], out: list[bytes]) -> None:
        kind = ev.get("type")
        if kind == "content_block_delta":
            self._delta(ev, out)
        elif kind == "content_block_start":
            self._start(out)
            block = ev.get("content_block") or {}
            btype = block.get("type")
            if btype == "text" and block.get("text"):
                out.append(self._chunk(b'{"content":' + dumps(block["text"]) + b"}"))
            elif btype == "tool_use":
                ordinal = len(self._tools)
                self._tools[ev.get("index", ordinal)] = ordinal
                call = {"index": ordinal, "id": block.get("id") or new_id("call_"),
                        "type": "function",
                        "function": {"name": block.get("name") or "", "arguments": ""}}
                out.append(self._chunk(b'{"tool_calls":[' + dumps(call) + b"]}"))
                if block.get("input"):  # complete input up front: not how Anthropic streams
                    self._arguments(ordinal, dumps(block["input"]).decode(), out)
        elif kind == "content_block_stop":
            stopped = self._tools.get(ev.get("index", -1))
            if stopped is not None and not self._args.get(stopped):
                self._arguments(stopped, "{}", out)  # no-argument tools: "" is not JSON
        elif kind == "message_start":
            msg = ev.get("message") or {}
            self._merge_usage(msg.get("usage"))
            self._start(out, msg.get("id"))
        elif kind == "message_delta":
            self._merge_usage(ev.get("usage"))
            stop = (ev.get("delta") or {}).get("stop_reason")
            if stop and self._finish is None:
                self._finish_chunk(STOP_TO_FINISH.get(stop, "stop"), out)
        elif kind == "message_stop":
            self._close(out)
        elif kind == "error":
            err = ev.get("error") or {}
            body = openai_error(str(err.get("message") or "upstream stream error"),
                                err.get("type"))
            out.append(b"data: " + dumps({"error": body}) + b"\n\n")
            self.finished = True

    def _delta(self, ev: dict[str, Any], out: list[bytes]) -> None:
        delta = ev.get("delta") or {}
        dtype = delta.get("type")
        if dtype == "text_delta":
            text = delta.get("text")
            if text:
                self._start(out)
                out.append(self._chunk(b'{"content":' + dumps(text) + b"}"))
        elif dtype == "input_json_delta":
            ordinal = self._tools.get(ev.get("index", -1))
            partial = delta.get("partial_json")
            if ordinal is not None and partial:
                self._arguments(ordinal, partial, out)
        # thinking_delta, signature_delta, citations_delta: nothing OpenAI could carry

    def _arguments(self, ordinal: int, partial: str, out: list[bytes]) -> None:
        self._args[ordinal] = True
        out.append(self._chunk(b'{"tool_calls":[{"index":' + str(ordinal).encode()
                               + b',"function":{"arguments":' + dumps(partial) + b"}}]}"))

    def _start(self, out: list[bytes], upstream_id: Any = None) -> None:
        """Emit the role chunk once, naming the stream after the upstream message."""
        if self._prefix:
            return
        cid = "chatcmpl-" + strip_prefix(upstream_id, "chatcmpl-")
        self._prefix = (b'data: {"id":' + dumps(cid)
                        + b',"object":"chat.completion.chunk","created":'
                        + str(self.created).encode() + b',"model":' + dumps(self.model))
        out.append(self._chunk(b'{"role":"assistant","content":""}'))

    def _chunk(self, delta: bytes, finish: bytes = b"null") -> bytes:
        return (self._prefix + b',"choices":[{"index":0,"delta":' + delta
                + b',"logprobs":null,"finish_reason":' + finish + b"}]" + self._suffix)

    def _finish_chunk(self, reason: str, out: list[bytes]) -> None:
        self._start(out)
        self._finish = reason
        out.append(self._chunk(b"{}", dumps(reason)))

    def _merge_usage(self, u: Any) -> None:
        """Anthropic usage counts are cumulative: later values replace earlier ones."""
        if isinstance(u, dict):
            self._usage.update((k, v) for k, v in u.items() if v is not None)

    def _close(self, out: list[bytes]) -> None:
        if self._finish is None:
            self._finish_chunk("stop", out)
        if self.include_usage:
            out.append(self._prefix + b',"choices":[],"usage":'
                       + dumps(chat_usage(self._usage)) + b"}\n\n")
        out.append(_DONE)
        self.finished = True


def _sse(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + dumps(payload) + b"\n\n"


class ChatToMessagesStream:
    """OpenAI ``chat.completion.chunk`` SSE -> Anthropic Messages events."""

    __slots__ = ("_block", "_chars", "_input", "_next", "_refusal", "_started", "_stop",
                 "_text_open", "_tools", "_usage", "finished", "model")

    def __init__(self, model: str, input_tokens: int = 0) -> None:
        self.model = model
        self.finished = False  # message_stop (or an error) went out
        self._input = input_tokens  # the gateway's estimate, until the upstream reports
        self._started = False
        self._block = -1  # index of the open content block, -1 when none is open
        self._text_open = False  # the open block is a text block
        self._next = 0  # index of the next content block
        self._tools: dict[int, int] = {}  # OpenAI tool-call index -> content block index
        self._stop: str | None = None
        self._usage: dict[str, Any] | None = None
        self._chars = 0  # generated characters, for an output estimate without usage
        self._refusal = False

    def feed(self, blob: bytes) -> bytes:
        """Translate a blob of complete upstream events."""
        if self.finished:
            return b""
        out: list[bytes] = []
        for ev in _payloads(blob):
            if ev == "[DONE]":
                self._end(out)
            elif isinstance(ev, dict):
                if "error" in ev and not ev.get("choices"):
                    self._error(ev["error"], out)
                else:
                    self._chunk(ev, out)
            if self.finished:
                break
        return b"".join(out)

    def finish(self) -> bytes:
        """Close a stream that reported its finish_reason but no usage and no [DONE]."""
        if self.finished or self._stop is None:
            return b""
        out: list[bytes] = []
        self._end(out)
        return b"".join(out)

    def _chunk(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        if not self._started:
            self._start(chunk.get("id"), out)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                self._text(text, out)
            refusal = delta.get("refusal")
            if refusal:
                self._refusal = True
                self._text(refusal, out)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._tool(call, out)
            finish = choice.get("finish_reason")
            if finish:
                self._stop = FINISH_TO_STOP.get(finish, "end_turn")
                self._close_block(out)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
            if self._stop is not None:
                self._end(out)

    def _start(self, upstream_id: Any, out: list[bytes]) -> None:
        self._started = True
        out.append(_sse(b"message_start", {"type": "message_start", "message": {
            "id": "msg_" + strip_prefix(upstream_id, "chatcmpl-"), "type": "message",
            "role": "assistant", "model": self.model, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {
                "input_tokens": self._input, "output_tokens": 1,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}))

    def _open(self, block: dict[str, Any], out: list[bytes]) -> int:
        self._close_block(out)
        index = self._block = self._next
        self._next += 1
        self._text_open = block["type"] == "text"
        out.append(_sse(b"content_block_start", {"type": "content_block_start", "index": index,
                                                 "content_block": block}))
        return index

    def _close_block(self, out: list[bytes]) -> None:
        if self._block >= 0:
            out.append(b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
                       + str(self._block).encode() + b"}\n\n")
            self._block = -1
            self._text_open = False

    def _text(self, text: str, out: list[bytes]) -> None:
        if not self._text_open:
            self._open({"type": "text", "text": ""}, out)
        self._chars += len(text)
        out.append(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                   + str(self._block).encode() + b',"delta":{"type":"text_delta","text":'
                   + dumps(text) + b"}}\n\n")

    def _tool(self, call: dict[str, Any], out: list[bytes]) -> None:
        fn = call.get("function") or {}
        ordinal = call.get("index")
        if not isinstance(ordinal, int):  # servers that omit it send one call per id
            ordinal = len(self._tools) if call.get("id") else max(self._tools, default=0)
        index = self._tools.get(ordinal)
        if index is None:
            index = self._tools[ordinal] = self._open({
                "type": "tool_use", "id": call.get("id") or new_id("toolu_"),
                "name": fn.get("name") or "", "input": {}}, out)
        args = fn.get("arguments")
        if args:
            self._chars += len(args)
            # Calls stream one after another; a late fragment still names its own block.
            out.append(b'event: content_block_delta\ndata: {"type":"content_block_delta",'
                       b'"index":' + str(index).encode()
                       + b',"delta":{"type":"input_json_delta","partial_json":'
                       + dumps(args) + b"}}\n\n")

    def _end(self, out: list[bytes]) -> None:
        if not self._started:
            self._start(None, out)
        self._close_block(out)
        stop = self._stop or "end_turn"
        if stop == "end_turn" and self._tools:
            stop = "tool_use"  # some servers finish tool calls with "stop"
        elif stop == "end_turn" and self._refusal:
            stop = "refusal"
        if self._usage is not None:
            usage: dict[str, Any] = messages_usage(self._usage)
        else:
            usage = {"output_tokens": max(1, (self._chars + 3) // 4) if self._chars else 0}
        out.append(_sse(b"message_delta", {"type": "message_delta", "delta": {
            "stop_reason": stop, "stop_sequence": None}, "usage": usage}))
        out.append(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        self.finished = True

    def _error(self, err: Any, out: list[bytes]) -> None:
        if isinstance(err, dict):
            message, kind, code = err.get("message"), err.get("type"), err.get("code")
        else:
            message, kind, code = err, None, None
        out.append(_sse(b"error", {"type": "error", "error": {
            "type": anthropic_type(kind if isinstance(kind, str) else None, code),
            "message": str(message or "upstream stream error")}}))
        self.finished = True
