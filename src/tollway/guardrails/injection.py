"""Instructions hidden in content the agent did not write: tool results, fetched pages,
retrieved documents, emails. A heuristic layer, fast enough for every tool result:

- `instruction_override`: telling the reader to ignore, forget or replace its instructions;
- `role_injection`: text posing as another turn or the system (`system:` lines, chat-template
  tokens such as `<|im_start|>`, `[INST]`, "new system prompt:");
- `addressed_to_assistant`: orders aimed at the model ("AI assistant: you must...", "you are
  now...", "do not tell the user");
- `exfiltration`: a markdown image or link whose URL carries data to a host not in
  `allowed_hosts`, or an order to send or forward something to a URL or an address;
- `hidden_unicode`: Unicode tag characters, bidirectional overrides, or zero-width characters
  inside words (text a human reviewer does not see);
- `encoded_instructions`: a base64 run that decodes to text which itself trips the above.

Each pattern was written against the attacks the OWASP LLM01 write-ups and the public
injection corpora describe, and checked on their benign counterparts (bench/guardrails_eval.py
reports precision and recall on a half never tuned on). An optional model judge
(guardrails/judge.py) can confirm what the heuristics miss.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from urllib.parse import urlsplit

from tollway.config.guardrails import InjectionConfig

from .base import Finding
from .injection_patterns import PATTERNS

_IMAGE = re.compile(r"!\[[^\]\n]{0,200}\]\(\s*<?(https?://[^)\s>]+)")
_LINK = re.compile(r"(?<!!)\[[^\]\n]{0,200}\]\(\s*<?(https?://[^)\s>]+)")
_TAGS = re.compile("[\U000e0000-\U000e007f]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_ZERO_WIDTH_IN_WORD = re.compile("\\w[\u200b-\u200d\u2060-\u2064\ufeff]+\\w")
# (the lookbehind starts a run only at its beginning, not again at each of its characters)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40,}={0,2}")


class InjectionDetector:
    name = "injection"

    def __init__(self, cfg: InjectionConfig) -> None:
        self.allowed = [h.lower() for h in cfg.allowed_hosts]

    def scan(self, text: str, depth: int = 0) -> list[Finding]:
        low = text.lower()
        out = [Finding("injection", entity, m.start(), m.end())
               for entity, gate, rx in PATTERNS
               if any(word in low for word in gate) for m in rx.finditer(text)]
        if "](" in text:
            for rx, carries in ((_IMAGE, True), (_LINK, False)):
                for m in rx.finditer(text):
                    if self._suspect(m.group(1), image=carries):
                        out.append(Finding("injection", "exfiltration", m.start(), m.end()))
        if not text.isascii():
            for rx in (_TAGS, _BIDI, _ZERO_WIDTH_IN_WORD):
                m = rx.search(text)
                if m is not None:
                    out.append(Finding("injection", "hidden_unicode", m.start(), m.end()))
        if depth == 0:
            for m in _BASE64.finditer(text):
                decoded = _decode(m.group(0))
                if decoded and self.scan(decoded, depth=1):
                    out.append(Finding("injection", "encoded_instructions", m.start(),
                                       m.end()))
        return out

    def _suspect(self, url: str, image: bool) -> bool:
        """An image fetches its URL as soon as it is rendered: anything with a query or a
        long path to an unknown host may carry data out. A link needs a click: only one
        whose query is long enough to carry something."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return True
        host = (parts.hostname or "").lower()
        if any(fnmatch.fnmatchcase(host, g) for g in self.allowed):
            return False
        if image:
            return bool(parts.query) or len(parts.path) > 48
        return len(parts.query) > 64


def _decode(run: str) -> str | None:
    try:
        raw = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(c.isprintable() or c.isspace() for c in text)
    return text if text and printable / len(text) > 0.95 else None
