"""Secrets with detect-secrets' plugins: cloud and SaaS keys, private keys, JWTs, tokens,
`password = ...` assignments, and (when asked) high-entropy strings.

The plugins are used directly, not through `scan_line` (which also runs every filter and
costs ~0.9 ms a line): a regex plugin's own patterns give the whole match and where it is;
the keyword and entropy plugins give the value, which is then located. The keyword plugin
is the slow one (~150 us a line), so it only reads lines that name a secret-ish keyword.
"""

from __future__ import annotations

import re
from typing import Any

from tollway.config.guardrails import SecretsConfig

from .base import Finding, located

_ENTROPY = {"Base64HighEntropyString", "HexHighEntropyString"}
_NOT_SECRETS = {"IPPublicDetector"}  # an IP address is personal data (pii), not a secret


class SecretsDetector:
    name = "secrets"

    def __init__(self, cfg: SecretsConfig) -> None:
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
        from detect_secrets.plugins.base import RegexBasedDetector
        from detect_secrets.plugins.keyword import DENYLIST

        classes = {c.__name__: c for c in get_mapping_from_secret_type_to_class().values()}
        names = cfg.plugins or [n for n in classes if n not in _NOT_SECRETS
                                and (cfg.entropy or n not in _ENTROPY)]
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise ValueError(f"unknown detect-secrets plugins: {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(classes))})")
        if cfg.entropy:
            names += [n for n in _ENTROPY if n not in names]
        self.regex: list[tuple[str, re.Pattern[str]]] = []
        self.other: list[Any] = []
        self.keyword: Any = None
        for n in names:
            plugin = classes[n]()
            if isinstance(plugin, RegexBasedDetector):
                self.regex += [(plugin.secret_type, rx) for rx in plugin.denylist]
            elif n == "KeywordDetector":
                self.keyword = plugin
            else:
                self.other.append(plugin)
        self.keywords = re.compile("|".join(DENYLIST), re.IGNORECASE)

    def scan(self, text: str) -> list[Finding]:
        out = [Finding("secrets", kind, m.start(), m.end())
               for kind, rx in self.regex for m in rx.finditer(text) if m.end() > m.start()]
        if self.keyword is not None and self.keywords.search(text):
            for line in text.splitlines():
                if self.keywords.search(line):
                    for value in self.keyword.analyze_string(line):
                        out += located("secrets", self.keyword.secret_type, text, value)
        for plugin in self.other:
            for line in text.splitlines():
                for value in plugin.analyze_string(line):
                    out += located("secrets", plugin.secret_type, text, value)
        return out
