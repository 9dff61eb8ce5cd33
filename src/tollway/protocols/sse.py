"""Server-sent events, handled a network chunk at a time.

Python pays per call, not per byte: splitting a chunk's events and parsing each one's JSON
costs microseconds per event, more than the relay itself. So the splitter hands back all
complete events of a chunk as one bytes object, observers scan it with bytes searches and
one regex, and only the few events that carry usage are parsed.
"""

from __future__ import annotations

import re
from typing import Any

import orjson


class EventSplitter:
    """Feeds on arbitrary network chunks; returns the complete events received so far."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:  # on the joined bytes: a CRLF may be split between two reads
            buf = buf.replace(b"\r\n", b"\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return b""
        self._buf = buf[end + 2:]
        return buf if end + 2 == len(buf) else buf[: end + 2]


def events(blob: bytes) -> list[bytes]:
    """The events of a blob of complete events, each without its blank-line terminator."""
    return [e for e in blob.split(b"\n\n") if e]


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


class TextCapture:
    """Collects the produced text of a stream without parsing every event.

    The text is only needed to count tokens when a stream is cut before its usage arrives,
    so each blob is scanned once by a regex for the JSON string fields that carry generated
    text; the pieces stay JSON-escaped until (and unless) they are needed.
    """

    __slots__ = ("_pattern", "nbytes", "pieces")

    def __init__(self, fields: tuple[str, ...]) -> None:
        self._pattern = field_pattern(fields)
        self.pieces: list[bytes] = []
        self.nbytes = 0

    def scan(self, blob: bytes) -> bool:
        """True when the blob carried some generated text."""
        found = self._pattern.findall(blob)
        if not found:
            return False
        self.pieces.extend(found)
        self.nbytes += sum(map(len, found))
        return any(found)

    def text(self, start: int = 0) -> str:
        """The text of the pieces from `start` on (all of it by default)."""
        return unescape(b"".join(self.pieces[start:] if start else self.pieces))


_patterns: dict[tuple[str, ...], re.Pattern[bytes]] = {}


def field_pattern(fields: tuple[str, ...]) -> re.Pattern[bytes]:
    """A regex whose group 1 is the JSON-escaped value of any of these string fields (built
    once per set of fields, not per stream)."""
    pattern = _patterns.get(fields)
    if pattern is None:
        names = "|".join(re.escape(f) for f in fields)
        pattern = _patterns[fields] = re.compile(
            rb'"(?:' + names.encode() + rb')":\s*"([^"\\]*(?:\\.[^"\\]*)*)"')
    return pattern


def unescape(raw: bytes) -> str:
    """A JSON string's escaped content as text (undecodable: as it is, replaced)."""
    try:
        return str(orjson.loads(b'"' + raw + b'"'))
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def data_of(blob: bytes, marker: bytes) -> list[Any]:
    """Parse only the events of a blob that contain `marker` (usage carriers, say)."""
    out = []
    for ev in events(blob):
        if marker in ev:
            try:
                out.append(orjson.loads(event_data(ev)[1]))
            except orjson.JSONDecodeError:
                continue
    return out
