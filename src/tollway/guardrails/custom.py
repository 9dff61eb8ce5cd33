"""Your own patterns and deny lists: the cheapest detector, one regex pass per pattern."""

from __future__ import annotations

import re

from tollway.config.guardrails import CustomConfig

from .base import Finding


class CustomDetector:
    name = "custom"

    def __init__(self, cfg: CustomConfig) -> None:
        self.patterns = [(entity, re.compile(p)) for entity, p in cfg.patterns.items()]
        words = sorted({w.strip() for w in cfg.deny if w.strip()}, key=len, reverse=True)
        # whole words only: "ass" must not match "class"
        self.deny = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)",
                               re.IGNORECASE) if words else None

    def scan(self, text: str) -> list[Finding]:
        out = [Finding("custom", entity, m.start(), m.end())
               for entity, rx in self.patterns for m in rx.finditer(text) if m.end() > m.start()]
        if self.deny is not None:
            out += [Finding("custom", "deny_list", m.start(), m.end())
                    for m in self.deny.finditer(text)]
        return out
