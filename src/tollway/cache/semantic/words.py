"""Token ids of a text from a memo of its words, for WordLlama's tokenizer.

The tokenizer's `encode` costs ~95 us for a 300-character turn (most of it building the
Encoding object: offsets, masks, word ids), and a semantic lookup tokenises two texts: it
was the largest part of a semantic hit. Agents repeat their words, so the ids are memoised
per word.

This is exact, not an approximation, for the tokenizer WordLlama ships (a SentencePiece-style
BPE: spaces become `▁`, a `▁` is prepended, no pre-tokenizer): BPE merges only pairs whose
result is in the vocabulary, and no token of it has a `▁` after another character, so no
merge ever crosses the start of a word. A text is then the concatenation of its words, each
tokenised alone: a word is a run of spaces and the characters up to the next space, and
tokenising it with its first space dropped gives the same `▁` prefix the whole text would
(the tokenizer prepends one). `WordIds.for_tokenizer` checks the vocabulary and the
normaliser and returns None when they do not have this shape (then `encode` is used whole);
tests/cache/test_words.py compares both ways on public text and on generated strings.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

_WORD = re.compile(r" *[^ ]+| +")
_SPACE = "\u2581"  # ▁
_MAX_WORD = 64  # longer runs (base64, minified code) are tokenised but not kept
_NORMALIZER = {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": _SPACE},
    {"type": "Replace", "pattern": {"String": " "}, "content": _SPACE}]}


class WordIds:
    """Two generations of at most `size` words each: a word used in the current or the last
    generation is kept, so the memo stays bounded without per-lookup bookkeeping (and plain
    dict reads and writes are safe from the executor's threads)."""

    def __init__(self, tokenizer: Tokenizer, size: int = 50_000) -> None:
        self.tokenizer = tokenizer
        self.size = size
        self._new: dict[str, list[int]] = {}
        self._old: dict[str, list[int]] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, size: int = 50_000) -> WordIds | None:
        spec = json.loads(tokenizer.to_str())
        model = spec.get("model") or {}
        # (a post-processor only adds special tokens, which the embedder never asks for)
        if (spec.get("pre_tokenizer") is not None or spec.get("normalizer") != _NORMALIZER
                or model.get("type") != "BPE" or model.get("dropout")):
            return None
        for token in tokenizer.get_vocab():
            stripped = token.lstrip(_SPACE)
            if _SPACE in stripped:
                return None
        return cls(tokenizer, size)

    def ids(self, text: str) -> list[int]:
        if not text:
            return []
        out: list[int] = []
        new, old = self._new, self._old
        for word in _WORD.findall(" " + text):
            key = word[1:]  # the tokenizer's own prepended ▁ stands for the dropped space
            hit = new.get(key)
            if hit is None:
                hit = old.get(key)
                if hit is None:
                    hit = self._encode(key)
                if len(key) <= _MAX_WORD:
                    if len(new) >= self.size:
                        self._old, self._new = new, {}
                        new = self._new
                    new[key] = hit
            out += hit
        return out

    def _encode(self, key: str) -> list[int]:
        if key:
            return self.tokenizer.encode(key, add_special_tokens=False).ids
        # one trailing space: the prepended ▁ alone, which encode("") does not give
        space = self.tokenizer.token_to_id(_SPACE)
        return [] if space is None else [space]

