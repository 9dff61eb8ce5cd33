"""Split a byte stream into whole SSE events without copying more than needed."""

from __future__ import annotations


class EventSplitter:
    """Feeds on arbitrary network chunks and yields complete events (terminator included)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return []
        self._buf = buf[end + 2:]
        whole = buf[: end + 2]
        if whole.count(b"\n\n") == 1:
            return [whole]
        return [e + b"\n\n" for e in whole[:-2].split(b"\n\n")]

    def rest(self) -> bytes:
        """What arrived after the last complete event (a truncated stream's tail)."""
        return self._buf


def event_data(event: bytes) -> tuple[bytes | None, bytes]:
    """The `event:` name (or None) and the joined `data:` payload of one event."""
    name = None
    data: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return name, b"\n".join(data)
