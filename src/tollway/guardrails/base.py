"""What every detector gives back: where in the text, what kind, how sure; never the value
itself outside the request (audit, metrics and steps carry the entity and the position)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Finding:
    detector: str  # pii, secrets, injection, custom
    entity: str  # EMAIL_ADDRESS, AWS Access Key, instruction_override, hidden_unicode...
    start: int
    end: int
    score: float = 1.0


class Detector(Protocol):
    name: str

    def scan(self, text: str) -> list[Finding]:
        """Findings in `text`, in any order; overlapping ones are fine (redaction merges)."""
        ...


def located(detector: str, entity: str, text: str, value: str, score: float = 1.0,
            ) -> list[Finding]:
    """Every place `value` occurs in `text` (for libraries that give the value, not where)."""
    out: list[Finding] = []
    if not value:
        return out
    at = text.find(value)
    while at >= 0:
        out.append(Finding(detector, entity, at, at + len(value), score))
        at = text.find(value, at + len(value))
    return out
