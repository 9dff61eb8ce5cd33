"""Redaction with stable placeholders: within one request the same value always becomes the
same `<EMAIL_ADDRESS_1>`, so the model can still tell two people apart, refer back to
one, and a placeholder in its answer can be put back (`restore: true`) for the agent."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .engine import Hit
from .slots import Slot

_NOT_NAME = re.compile(r"[^A-Z0-9]+")


class Redactor:
    __slots__ = ("answer_values", "counts", "placeholders", "restorable")

    def __init__(self) -> None:
        self.placeholders: dict[tuple[str, str], str] = {}
        self.counts: dict[str, int] = {}
        self.restorable: dict[str, str] = {}  # placeholder -> original, for restore rules
        self.answer_values: dict[str, str] = {}  # value redacted in an answer -> its token

    def apply(self, slots: Sequence[Slot], hits: Sequence[Hit]) -> int:
        """Rewrite the slots the redacting hits are in; returns how many values changed."""
        by_slot: dict[int, list[Hit]] = {}
        for h in hits:
            if h.rule.action == "redact":
                by_slot.setdefault(h.slot, []).append(h)
        changed = 0
        for i, group in by_slot.items():
            slot = slots[i]
            text = slot.text
            spans = _merged(group)
            for start, end, hit in reversed(spans):
                value = text[start:end]
                token = self._replacement(hit, value)
                if slot.kind == "answer":
                    self.answer_values[value] = token
                text = text[:start] + token + text[end:]
                changed += 1
            slot.set(text)
        return changed

    def _replacement(self, hit: Hit, value: str) -> str:
        if hit.rule.redact_with == "mask":
            return "*" * len(value)
        entity = _NOT_NAME.sub("_", hit.finding.entity.upper()).strip("_") or "REDACTED"
        key = (entity, value)
        token = self.placeholders.get(key)
        if token is None:
            n = self.counts[entity] = self.counts.get(entity, 0) + 1
            token = self.placeholders[key] = f"<{entity}_{n}>"
        if hit.rule.restore:
            self.restorable[token] = value
        return token

    def restore(self, text: str) -> str:
        for token, value in self.restorable.items():
            if token in text:
                text = text.replace(token, value)
        return text


def _merged(hits: list[Hit]) -> list[tuple[int, int, Hit]]:
    """Overlapping findings become one span (the first finding names it)."""
    out: list[tuple[int, int, Hit]] = []
    for h in sorted(hits, key=lambda h: (h.finding.start, -h.finding.end)):
        s, e = h.finding.start, h.finding.end
        if out and s < out[-1][1]:
            ps, pe, ph = out[-1]
            out[-1] = (ps, max(pe, e), ph)
        else:
            out.append((s, e, h))
    return out
