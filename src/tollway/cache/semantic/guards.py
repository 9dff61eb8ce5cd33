"""Near-miss guards: reject cached answers whose request differs in a detail cosine can't see.

Every embedder scores "enable 2FA" vs "disable 2FA", "3 sentences" vs "10 sentences" or "in
Python" vs "in Rust" as high as true paraphrases, so a cosine hit is only served when these
exact-match rules also pass. Each rule errs towards a miss: a false miss costs one upstream call,
a false hit serves a wrong answer. English only.
"""

from __future__ import annotations

from .content import content_change
from .features import Features, features
from .lexicon import ANTONYM_PAIRS

__all__ = ["RULES", "Features", "features", "near_miss"]

RULES = (
    "code", "quote", "script", "number", "operator", "negation", "antonym", "language", "time",
    "identifier", "entity", "order", "substitution", "qualifier",
)  # fmt: skip


_PREPOSITION_PAIRS = frozenset(
    i
    for i, (side_a, _, _) in enumerate(ANTONYM_PAIRS)
    if side_a.split()[0] in {"to", "in", "on", "up"}
)


def _show(a: tuple[str, ...] | frozenset[str], b: tuple[str, ...] | frozenset[str]) -> str:
    return f"{sorted(a)!r} vs {sorted(b)!r}"


def _mentions(text: Features, entity: str) -> bool:
    """Whether ``text`` names ``entity`` too: exactly (maybe opening a sentence), or in another
    case unless it is an acronym, where case carries meaning ("US" vs "us", "MB" vs "Mb")."""
    if entity in text.entities or entity in text.openers:
        return True
    if len(entity) > 1 and entity.isupper():
        return False
    lower = entity.lower()
    return lower in text.words or lower + "'s" in text.words


def _same_order(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Shared items appear in the same order ("London to Paris" vs "Paris to London")."""
    if not a or not b:
        return True
    shared = set(a) & set(b)
    return [x for x in a if x in shared] == [x for x in b if x in shared]


def near_miss(query: str, candidate: str) -> str | None:
    """Why ``candidate``'s answer must not be served for ``query``, or None if the guards pass.

    Returns ``"<rule>: <detail>"`` for the first rule that fails; rules: code, quote, script,
    number, operator, negation, antonym, language, time, identifier, entity, order, substitution,
    qualifier.
    """
    if query == candidate:
        return None
    q, c = features(query), features(candidate)
    if q.code != c.code:
        return f"code: {q.code!r} vs {c.code!r}"
    if q.quotes != c.quotes:
        return f"quote: {q.quotes!r} vs {c.quotes!r}"
    if q.scripts != c.scripts:
        return f"script: {q.scripts!r} vs {c.scripts!r}"
    if q.numbers != c.numbers:
        return f"number: {_show(q.numbers, c.numbers)}"
    if q.operators != c.operators:
        return f"operator: {q.operators!r} vs {c.operators!r}"
    if q.negations != c.negations:
        return f"negation: {q.negations} vs {c.negations} (not-words, without)"
    if q.antonyms != c.antonyms:
        for pair in q.antonyms.keys() | c.antonyms.keys():
            a, b = q.antonyms.get(pair, 0), c.antonyms.get(pair, 0)
            # A vs B, or A+B vs B ("show hidden files" vs "hide files"); prepositions are
            # too common for the second form ("connect to X from Python" vs "to X using Python").
            if a | b == 3 and a != b and (not a & b or pair not in _PREPOSITION_PAIRS):
                side_a, side_b, _ = ANTONYM_PAIRS[pair]
                return f"antonym: {side_a.split()[0]}/{side_b.split()[0]}"
    if q.languages != c.languages:
        return f"language: {_show(q.languages, c.languages)}"
    if q.times != c.times:
        return f"time: {_show(q.times, c.times)}"
    if q.identifiers != c.identifiers:
        return f"identifier: {_show(q.identifiers, c.identifiers)}"
    if q.entities != c.entities:
        # A name in one text must appear in the other, maybe opening a sentence or (unless an
        # acronym) in another case: forgives "france" vs "France", not "France" vs "Germany".
        lost = {e for e in q.entities - c.entities if not _mentions(c, e)}
        lost |= {e for e in c.entities - q.entities if not _mentions(q, e)}
        if lost:
            return f"entity: {sorted(lost)!r}"
    if not _same_order(q.entity_order, c.entity_order):
        return f"order: {q.entity_order!r} vs {c.entity_order!r}"
    if not _same_order(q.language_order, c.language_order):
        return f"order: {q.language_order!r} vs {c.language_order!r}"
    return content_change(q.content, q.sequence, c.content, c.sequence)
