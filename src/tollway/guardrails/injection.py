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

_I = re.IGNORECASE
# Each pattern with the words it cannot match without (lowercase): Python's re tries a
# pattern at every position, ~40 us a KB each; a substring test is ~100 times cheaper, so a
# pattern runs only on text that has one of its words.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("instruction_override", re.compile(
        r"\b(?:ignore|disregard|forget|override|bypass|skip|drop)\b[^.\n]{0,40}?"
        r"\b(?:previous|prior|above|earlier|preceding|all|any|your|the|these|those|original|"
        r"system|developer)\b[^.\n]{0,30}?\b(?:instructions?|prompts?|rules|directions|"
        r"directives?|guidelines|guardrails|context|messages?|constraints|programming)\b", _I)),
    ("instruction_override", re.compile(
        r"\b(?:new|updated|revised|real|actual|true|hidden|secret|additional|important)\s+"
        r"(?:system\s+)?(?:instructions?|prompt|directives?|orders|task)\s*(?::|-{1,2}|follow)",
        _I)),
    ("role_injection", re.compile(
        r"(?:^|\n)\s*(?:#{1,4}\s*)?(?:system|assistant|developer)\s*(?:prompt|message)?\s*:"
        r"\s*\S", _I)),
    ("role_injection", re.compile(
        r"<\|?\s*(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\s*\|?>|"
        r"\[/?(?:INST|SYS)\]|<</?SYS>>|</?(?:system|instructions?)>", _I)),
    ("addressed_to_assistant", re.compile(
        r"\b(?:you are now|from now on,? you|act as (?:an?|the) (?:unrestricted|unfiltered|"
        r"jailbroken|different)|pretend (?:to be|you are)|enter (?:developer|dan|god) mode|"
        r"developer mode (?:enabled|on))\b", _I)),
    ("addressed_to_assistant", re.compile(
        r"\b(?:AI|assistant|chatbot|language model|LLM|agent|GPT|Claude|model)\b[,:]?\s+"
        r"(?:you\s+)?(?:must|should|shall|need to|have to|are (?:required|instructed) to)\s+"
        r"(?:now\s+)?(?:ignore|send|forward|email|reveal|print|output|include|call|run|execute|"
        r"delete|transfer|say|respond|reply|tell|include)\b", _I)),
    ("addressed_to_assistant", re.compile(
        r"\b(?:do not|don't|never)\s+(?:tell|inform|mention|reveal|show|alert|notify)\b"
        r"[^.\n]{0,30}\b(?:the user|the human|anyone|the customer|them)\b", _I)),
    ("addressed_to_assistant", re.compile(
        r"\b(?:reveal|print|output|repeat|show|leak|dump)\b[^.\n]{0,25}\b(?:your|the)\s+"
        r"(?:system\s+prompt|initial\s+instructions|hidden\s+instructions|instructions above)",
        _I)),
    ("exfiltration", re.compile(
        r"\b(?:send|forward|e-?mail|post|upload|transmit|exfiltrate|leak|copy)\b[^.\n]{0,80}?"
        r"\b(?:to|at|into)\s+(?:https?://|[\w.+-]+@[\w-]+\.[\w.]+)", _I)),
]
_GATES: list[tuple[str, ...]] = [
    ("ignore", "disregard", "forget", "override", "bypass", "skip", "drop"),
    ("instruction", "prompt", "directive", "orders", "task"),
    ("system", "assistant", "developer"),
    ("<|", "[inst", "[/inst", "[sys", "[/sys", "<<sys", "<</sys", "<system", "</system",
     "<instruction", "</instruction"),
    ("you are now", "from now on", "act as", "pretend", " mode"),
    ("assistant", "chatbot", "language model", "llm", "agent", "gpt", "claude", "model",
     "ai"),
    ("do not", "don't", "never"),
    ("system prompt", "system  prompt", "initial", "hidden", "instructions above"),
    ("http", "@"),
]
assert len(_GATES) == len(_PATTERNS)
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
               for (entity, rx), gate in zip(_PATTERNS, _GATES, strict=True)
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
