"""Content words: what is left of a request once function words are gone.

Two uses. The text that gets embedded drops function words and is lower-cased, because a static
embedder averages token vectors: "How do I"/"How can I" noise then no longer dilutes the words
that carry meaning, which lifts paraphrase cosines and lowers minimal-pair ones. And the
content guards: a request that differs from a stored one by exactly one content word on each
side ("chicken soup" vs "beef soup"), or only by a word qualifying a shared one ("my business
account"), is a different request unless the words share a stem or a synonym group; cosine can't
see this on long texts, where one word barely moves the mean.
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import pairwise

from .lexicon import ANTONYM_PAIRS, FUNCTION_WORDS, SYNONYM_GROUPS

__all__ = ["content_change", "content_words", "embedding_text"]

_CONTRACTIONS = re.compile(r"(?<=[a-z])'(?:s|re|ve|ll|d|m)\b")
_NON_WORD = re.compile(r"[^\w\s'%$#+.-]+|(?<!\d)[.-]|[.-](?!\d)")


def _stem(word: str) -> str:
    """Crude suffix stripping: enough to match "leaking"/"leaky", "enable"/"enabled"."""
    stem = word[:-2] if word.endswith("'s") else word
    if stem.endswith("ies") and len(stem) > 4:
        return stem[:-3] + "y"
    for suffix in ("ing", "ed", "ly", "es", "s", "y"):
        if stem.endswith(suffix) and len(stem) - len(suffix) >= 3 and not stem.endswith("ss"):
            stem = stem[: -len(suffix)]
            break
    return stem[:-1] if len(stem) > 3 and stem.endswith("e") else stem


_SYNONYMS: dict[str, frozenset[int]] = {}
_GROUPS = [*SYNONYM_GROUPS, *(side for a, b, _ in ANTONYM_PAIRS for side in (a, b))]
for _group, _words in enumerate(_GROUPS):
    for _word in _words.split():
        for _form in (_word, _stem(_word)):
            _SYNONYMS[_form] = _SYNONYMS.get(_form, frozenset()) | {_group}


def embedding_text(text: str) -> str:
    """Lower-cased content words in order (the text itself if nothing would be left)."""
    low = _NON_WORD.sub(" ", _CONTRACTIONS.sub("", text.lower().replace("\u2019", "'")))
    words = [w for w in low.split() if w not in FUNCTION_WORDS]
    return " ".join(words) if words else " ".join(low.split()) or text


def content_words(
    words: frozenset[str], exclude: frozenset[str], has_digits: bool
) -> frozenset[str]:
    """Content words of a text's word set, minus words other guards already compare (numbers,
    negations): "five" vs "5" or "don't" vs "not" are not substitutions."""
    found = words - FUNCTION_WORDS - exclude
    return found - {w for w in found if w[0].isdigit()} if has_digits else found


@lru_cache(maxsize=16384)
def _keys(word: str) -> frozenset[str | int]:
    """A word's stem plus its synonym groups; two words match if their keys intersect."""
    stem = _stem(word)
    return frozenset([stem, *_SYNONYMS.get(word, ()), *_SYNONYMS.get(stem, ())])


def _unmatched(words: frozenset[str], others: frozenset[str]) -> list[str]:
    other_keys: set[str | int] = set()
    for word in others:
        other_keys |= _keys(word)
    return [w for w in words if other_keys.isdisjoint(_keys(w))]


def content_change(
    a: frozenset[str], a_words: tuple[str, ...], b: frozenset[str], b_words: tuple[str, ...]
) -> str | None:
    """How two requests' content words differ in a way that changes the request, or None.

    ``substitution``: each side has exactly one content word the other lacks (after stems and
    synonyms), as in "chicken soup" vs "beef soup". ``qualifier``: one side only adds words, and
    one of them directly precedes a content word both share, as in "my account" vs "my business
    account". Larger rewrites are left to the cosine threshold.
    """
    only_a, only_b = a - b, b - a
    if not only_a and not only_b:
        return None
    left = _unmatched(only_a, b) if only_a else []
    right = _unmatched(only_b, a) if only_b else []
    if len(left) == 1 and len(right) == 1:
        return f"substitution: {left[0]}/{right[0]}"
    if bool(left) != bool(right):
        extra, words, shared = (left, a_words, b) if left else (right, b_words, a)
        for word, following in pairwise(words):
            if following in shared and word in extra:
                return f"qualifier: {word} {following}"
    return None
