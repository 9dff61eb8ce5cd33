"""Feature extraction for the near-miss guards: the exact details cosine similarity can't see.

Extraction is the costly half of a guard check (comparing is a few tuple/set compares), so it
is memoised per text and written for CPython's ``re``: each pattern starts with a literal or a
small character class, rare features are gated by cheap ``in`` tests, and word lists are matched
by set intersection rather than Python loops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .content import content_words
from .lexicon import (
    ANTONYM_FORMS,
    CAPITALISED_ONLY_LANGUAGES,
    LANGUAGES,
    NUMBER_WORDS,
    TIME_WORDS,
)
from .numbers import digit_numbers, word_numbers

__all__ = ["Features", "features"]

# Every pattern starts with a literal or a small character class so ``re`` can skip ahead in C;
# context (what precedes a match) is checked in Python on the few matches there are.
_CODE = re.compile(r"```(.*?)(?:```|\Z)|`([^`\n]+)`", re.S)
_QUOTES = (
    ('"', re.compile(r'"([^"\n]+)"')),
    ("\u201c", re.compile(r"\u201c([^\u201d\n]+)\u201d")),
    ("\u2018", re.compile(r"\u2018([^\u2019\n]+)\u2019")),
    ("«", re.compile(r"«([^»\n]+)»")),
)
_SINGLE_QUOTE = re.compile(r"'([^'\n]+)'(?!\w)")
_SCRIPT = re.compile(
    "[\u0370-\u03ff\u0400-\u052f\u0590-\u06ff\u0900-\u0eff\u10a0-\u10ff\u1100-\u11ff"
    "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+"
)
_ASCII_WORDS = str.maketrans({chr(c): " " for c in range(128) if not chr(c).isalnum() and c != 39})
_LOOSE_APOSTROPHE = re.compile(r"'(?![a-z])|'(?<![a-z]')")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_DIGIT = re.compile(r"\d")
_CAPITAL = re.compile(r"[A-Z]\w*")
_ABBREVIATIONS = frozenset("Mr Mrs Ms Dr Prof St Jr Sr vs etc Inc Ltd Co No Mt Ft".split())
_SYMBOL_LANGUAGE = re.compile(r"(?<![\w+#])(c\+\+|c#|f#|objective-c)(?![\w+#])")
_SEPARATOR = re.compile(r"[._/\\@:]+(?=[^\W_])")
_INITIALISM = re.compile(r"(?:\w\.)+\w")
_NEGATIONS = frozenset(
    "not no never cannot none nothing nobody nowhere neither nor dont doesnt didnt cant isnt "
    "arent wasnt werent shouldnt couldnt wouldnt havent hasnt hadnt aint mustnt neednt don't "
    "doesn't didn't can't won't isn't aren't wasn't weren't shouldn't couldn't wouldn't haven't "
    "hasn't hadn't ain't mustn't needn't mightn't shan't unable".split()
)
_OPENER = re.compile(r"[.!?;:\n(\[\"'\u201c\u2018][\s\-*\u2022>)\d]*([A-Z])")
_LEADING = " \t\r\n-*\u2022>).0123456789"
_TOKEN_EDGE = "\"'`\u201c\u201d\u2018\u2019()[]{}<>,;:!?."

_LANGUAGE_KEYS = frozenset(LANGUAGES)
_ANTONYM_KEYS = frozenset(ANTONYM_FORMS)
_CAPS_LANGUAGE_KEYS = frozenset(CAPITALISED_ONLY_LANGUAGES)
_CACHE_MAX_CHARS = 2048
_NOT_CONTENT = NUMBER_WORDS | _NEGATIONS


@dataclass(frozen=True, slots=True)
class Features:
    """What the guards compare; extracted once per text (see ``features``)."""

    code: tuple[str, ...]
    quotes: tuple[str, ...]
    scripts: tuple[str, ...]
    numbers: tuple[str, ...]  # sorted multiset of canonical "value unit" strings
    operators: tuple[str, ...]
    negations: tuple[int, int]  # (not/no/never/n't..., without)
    antonyms: dict[int, int]  # pair index -> bitmask of sides present (1 = A, 2 = B)
    languages: frozenset[str]
    times: frozenset[str]
    identifiers: frozenset[str]
    entities: frozenset[str]
    openers: frozenset[str]  # capitalised words opening a sentence (names or not)
    entity_order: tuple[str, ...]  # lower-cased, first occurrence, when 2+ names
    language_order: tuple[str, ...]  # first occurrence, when 2+ languages
    words: frozenset[str]
    content: frozenset[str]  # words minus function words, numbers and negations
    sequence: tuple[str, ...]  # all lower-cased words in order


def _take(pattern: re.Pattern[str], text: str, found: list[str]) -> str:
    """Collect ``pattern``'s first non-empty group and blank the match out of ``text``."""

    def take(m: re.Match[str]) -> str:
        found.append(next(g for g in m.groups() if g is not None).strip())
        return " "

    return pattern.sub(take, text)


def _single_quotes(text: str, found: list[str]) -> str:
    """'quoted' spans, skipping apostrophes ("don't", "users'") that only look like quotes."""
    pos = 0
    while (m := _SINGLE_QUOTE.search(text, pos)) is not None:
        if m.start() and (text[m.start() - 1].isalnum() or text[m.start() - 1] in "'\u2019"):
            pos = m.start() + 1  # an apostrophe, not an opening quote: look again after it
            continue
        found.append(m[1].strip())
        text = text[: m.start()] + " " + text[m.end() :]
        pos = m.start() + 1
    return text


def _opener_positions(text: str) -> set[int]:
    """Where capitalised words open a sentence, line or list item ("Mr. X" does not)."""
    found = {m.start(1) for m in _OPENER.finditer(text) if m[0][0] != "." or _ends(text, m)}
    start = len(text) - len(text.lstrip(_LEADING))
    if start < len(text) and text[start].isupper():
        found.add(start)
    return found


def _ends(text: str, m: re.Match[str]) -> bool:
    """Whether the "." before this opener ends a sentence rather than an abbreviation."""
    j = i = m.start()
    if i and text[i - 1].isdigit():
        return True  # "1. Install", "version 2. Then"
    while j and text[j - 1].isalpha():
        j -= 1
    return i - j > 1 and text[j:i] not in _ABBREVIATIONS  # "U.S. Army", "Dr. Who"


def _capitals(rest: str) -> tuple[list[str], set[str]]:
    """Names: capitalised words not opening a sentence, ALL-CAPS and camelCase tokens, in
    order (minus "I"); and the capitalised words that open a sentence, which may be names."""
    openings = _opener_positions(rest)
    names: list[str] = []
    openers: set[str] = set()
    for m in _CAPITAL.finditer(rest):
        start = m.start()
        if start in openings:
            openers.add(m[0])
        elif start and rest[start - 1].isalnum():  # inside camelCase ("iPhone"): take the word
            while start and rest[start - 1].isalnum():
                start -= 1
            names.append(rest[start : m.end()])
        elif m[0] != "I" and rest[m.end() : m.end() + 1] not in ("+", "#"):  # C++, C#
            names.append(m[0])
    return names, openers


def _identifiers(low: str) -> set[str]:
    """Tokens with inner separators: file names, paths, dotted/snake names, e-mail addresses."""
    found: set[str] = set()
    end = -1
    for m in _SEPARATOR.finditer(low):
        if m.start() < end or not m.start() or not low[m.start() - 1].isalnum():
            continue
        if ":" in m[0] and m[0] != "::":  # "note:" or "https://"; a later "." may still count
            continue
        start = max(low.rfind(" ", 0, m.start()), low.rfind("\n", 0, m.start())) + 1
        end = len(low)
        for stop in (low.find(" ", m.end()), low.find("\n", m.end())):
            if stop != -1:
                end = min(end, stop)
        token = low[start:end].strip(_TOKEN_EDGE)
        if token.upper() != token and not _INITIALISM.fullmatch(token):  # has a letter
            found.add(token)
    return found


def _extract(text: str) -> Features:
    code: list[str] = []
    quotes: list[str] = []
    rest = _take(_CODE, text, code) if "`" in text else text
    for char, pattern in _QUOTES:
        if char in rest:
            rest = _take(pattern, rest, quotes)
    if "'" in rest:
        rest = _single_quotes(rest, quotes)
    low = rest.lower()
    has_capitals = low != rest
    if rest.isascii():
        scripts: tuple[str, ...] = ()
        # keep "don't", drop quote-like apostrophes ("users'", "'90s")
        spaced = _LOOSE_APOSTROPHE.sub(" ", low) if "'" in low else low
        words = spaced.translate(_ASCII_WORDS).split()
    else:
        scripts = tuple(_SCRIPT.findall(rest))
        low = low.replace("\u2019", "'")
        words = _WORD.findall(low)
    wset = frozenset(words)

    numbers: list[str] = []
    operators: list[str] = []
    has_digits = _DIGIT.search(low) is not None
    if has_digits:
        numbers = digit_numbers(rest, operators)
    if not wset.isdisjoint(NUMBER_WORDS):
        numbers += word_numbers(words)

    negations = sum(words.count(w) for w in wset & _NEGATIONS)
    antonyms: dict[int, int] = {}
    for form in wset & _ANTONYM_KEYS:
        for pair, side in ANTONYM_FORMS[form]:
            antonyms[pair] = antonyms.get(pair, 0) | side

    names, openers = _capitals(rest) if has_capitals else ([], set())
    entities = frozenset(names)
    languages = {LANGUAGES[w] for w in wset & _LANGUAGE_KEYS}
    language_order = (
        tuple(dict.fromkeys(LANGUAGES[w] for w in words if w in _LANGUAGE_KEYS))
        if len(languages) > 1
        else ()
    )
    languages.update(CAPITALISED_ONLY_LANGUAGES[e] for e in entities & _CAPS_LANGUAGE_KEYS)
    if "+" in low or "#" in low or "objective-c" in low:
        languages.update(_SYMBOL_LANGUAGE.findall(low))
    return Features(
        code=tuple(code),
        quotes=tuple(quotes),
        scripts=scripts,
        numbers=tuple(sorted(numbers)),
        operators=tuple(operators),
        negations=(negations, words.count("without") if "without" in wset else 0),
        antonyms=antonyms,
        languages=frozenset(languages),
        times=wset & TIME_WORDS,
        identifiers=frozenset(_identifiers(low)),
        entities=entities,
        openers=frozenset(openers),
        entity_order=tuple(dict.fromkeys(e.lower() for e in names)) if len(entities) > 1 else (),
        language_order=language_order,
        words=wset,
        content=content_words(wset, _NOT_CONTENT, has_digits),
        sequence=tuple(words),
    )


# About 3 KB per short question and 17 KB per 200-token prompt: 2048 entries stay under ~40 MB.
_cached_extract = lru_cache(maxsize=2048)(_extract)


def features(text: str) -> Features:
    """Guard features of ``text``; texts up to 2048 characters are memoised (LRU, 2048 texts),
    so a query checked against several candidates, and recently stored texts, are read once."""
    return _cached_extract(text) if len(text) <= _CACHE_MAX_CHARS else _extract(text)
