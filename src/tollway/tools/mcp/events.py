"""Server-Sent Events: an SSE stream split into events, an event's name and data, and the
JSON-RPC message as an event."""

from __future__ import annotations

from typing import Any

from tollway.tools.mcp.messages import _dumps


def _sse_message(msg: Any) -> bytes:
    return b"event: message\ndata: " + _dumps(msg) + b"\n\n"


class _Events:
    """Splits an SSE byte stream into events, whatever the line ends (CRLF, LF, CR) and
    wherever the network cut it. Events come back without their blank-line terminator."""

    __slots__ = ("buf", "saw_id")

    def __init__(self) -> None:
        self.buf = b""
        self.saw_id = False  # an event carried an id: the stream is resumable

    def feed(self, chunk: bytes, last: bool = False) -> list[bytes]:
        buf = self.buf + chunk if self.buf else chunk
        tail = b""
        if b"\r" in buf:
            if buf.endswith(b"\r") and not last:  # maybe the first half of a CRLF
                buf, tail = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.buf = buf + tail
            return []
        self.buf = buf[end + 2:] + tail
        out = [e for e in buf[:end].split(b"\n\n") if e.strip(b"\n")]
        if not self.saw_id and b"id:" in buf[:end]:
            self.saw_id = any(line.startswith(b"id:") and line[3:].strip()
                              for e in out for line in e.split(b"\n"))
        return out

    def finish(self) -> tuple[list[bytes], bytes]:
        """At the end of the stream: the last complete events, and an unterminated rest."""
        events = self.feed(b"", last=True)
        rest, self.buf = self.buf, b""
        return events, rest


def _event_data(event: bytes) -> tuple[bytes | None, bytes | None]:
    """The event's name (None: "message") and its joined data (None: no data lines)."""
    name = None
    data: list[bytes] | None = None
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            (data := data if data is not None else []).append(
                line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return name, (b"\n".join(data) if data is not None else None)


def _with_data(event: bytes, payload: bytes) -> bytes:
    """The event with its data replaced (its name, id and retry kept)."""
    kept = [line for line in event.split(b"\n") if not line.startswith(b"data:")]
    return b"\n".join([*kept, b"data: " + payload])

