"""A streamed answer through the guardrails: a hold-back window, never the whole answer.

Events are held until `window` characters of generated text have arrived after them, so a
value split across events (an email over three deltas) is seen whole before its first
part is written; the held text is scanned each time a quarter window of new text has come
(and at the end), and what a rule redacts is rewritten inside the events that carry it. At
the end of the stream (or on a cached replay, written whole) everything left is checked and
let go. A block ends the stream with a `guardrail`
error event; whatever was held is never written. A value longer than the window can be
cut by it: the window bounds what is guaranteed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson

from tollway.protocols.sse import events, field_pattern, unescape

from .slots import Slot

# the JSON string fields that carry generated text (and tool arguments), per client
# dialect; never a thinking block's, whose signature covers its text
FIELDS = {"chat": ("content", "refusal", "arguments"), "messages": ("text", "partial_json"),
          "responses": ("delta",)}


class _Event:
    __slots__ = ("pieces", "raw", "spans")

    def __init__(self, raw: bytes, rx: re.Pattern[bytes]) -> None:
        self.raw = raw
        self.spans = [m.span(1) for m in rx.finditer(raw)]
        self.pieces = [unescape(raw[s:e]) for s, e in self.spans]

    def encoded(self) -> bytes:
        if not self.spans:
            return self.raw + b"\n\n"
        out, at = [], 0
        for (s, e), piece in zip(self.spans, self.pieces, strict=True):
            out += [self.raw[at:s], orjson.dumps(piece)[1:-1]]
            at = e
        out.append(self.raw[at:])
        return b"".join(out) + b"\n\n"


class Holdback:
    """The held events of one stream and their text, as slots the guardrails can rewrite."""

    def __init__(self, endpoint: str, window: int) -> None:
        self.rx = field_pattern(FIELDS.get(endpoint, ("content", "text", "delta")))
        self.window = window
        self.held: list[_Event] = []
        self.released = 0  # characters of text let go so far
        self.fresh = 0  # characters added since the last look

    def add(self, data: bytes) -> None:
        new = [_Event(e, self.rx) for e in events(data)]
        self.held += new
        self.fresh += sum(len(p) for ev in new for p in ev.pieces)

    def due(self, done: bool) -> bool:
        """Time to look again (and let go)? Every quarter window of new text, not every
        event: each character is then scanned about five times, not once per event that
        follows it (a detector pass over the window costs the same for 3 new characters
        as for 64)."""
        if done or self.fresh >= max(1, self.window // 4):
            self.fresh = 0
            return True
        return False

    def text(self) -> str:
        return "".join(p for ev in self.held for p in ev.pieces)

    def slot(self) -> Slot:
        """The held text as one slot; setting it spreads the new text back over the
        events (each edit lands in the event where it starts)."""
        return Slot(_Joined(self), 0, "answer")

    def release(self, everything: bool, restore: Callable[[str], str] | None = None,
                scrub: dict[str, str] | None = None) -> bytes:
        """The events that have `window` characters after them (all, at the end)."""
        total = sum(len(p) for ev in self.held for p in ev.pieces)
        n, seen = 0, 0
        for ev in self.held:
            size = sum(len(p) for p in ev.pieces)
            if not everything and total - seen - size < self.window:
                break
            seen += size
            n += 1
        if n == 0:
            return b""
        out, self.held = self.held[:n], self.held[n:]
        self.released += seen
        if restore is not None:  # jointly: a placeholder may be split over events
            _spread(out, restore("".join(p for ev in out for p in ev.pieces)))
        blob = b"".join(ev.encoded() for ev in out)
        for value, token in (scrub or {}).items():
            # a value redacted in the deltas, repeated whole by a summary event (Responses'
            # output_text.done and response.completed carry the full text again)
            escaped = orjson.dumps(value)[1:-1]
            if escaped in blob:
                blob = blob.replace(escaped, orjson.dumps(token)[1:-1])
        return blob


class _Joined:
    """A list-like view of the held pieces as one string at index 0."""

    def __init__(self, hb: Holdback) -> None:
        self.hb = hb

    def __getitem__(self, _: int) -> str:
        return self.hb.text()

    def __setitem__(self, _: int, new: str) -> None:
        _spread(self.hb.held, new)


def _spread(held: list[_Event], new: str) -> None:
    """Fit `new` over the held pieces: the common prefix and suffix stay where they are;
    the changed middle goes into the piece where the change starts, and the text it
    replaced is taken out of the pieces that carried it."""
    flat = [(ev, j) for ev in held for j in range(len(ev.pieces))]
    old = "".join(ev.pieces[j] for ev, j in flat)
    if old == new or not flat:
        return
    limit = min(len(old), len(new))
    head = 0
    while head < limit and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < limit - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    cut_end = len(old) - tail
    middle = new[head:len(new) - tail]
    pos, placed = 0, False
    for n, (ev, j) in enumerate(flat):
        p = ev.pieces[j]
        start, end = pos, pos + len(p)
        pos = end
        if not placed:
            if head < end or n == len(flat) - 1:
                keep = p[cut_end - start:] if cut_end <= end else ""
                ev.pieces[j] = p[:head - start] + middle + keep
                placed = True
        elif start < cut_end:
            ev.pieces[j] = p[min(cut_end - start, len(p)):]
