"""End-to-end quality of the semantic matcher with the real WordLlama model and the guards.

Data: tests/cache/data/semantic_pairs.json (84 paraphrase pairs, 146 hard negatives in 13
categories, 5 documented blind spots). Two set-ups:

* one partition per pair (what the gateway does: within a partition only the last user turn
  differs): store one side, query with the other, both directions;
* every first side stored in one partition, queried with every second side, so a query also
  competes with all the other rows (run with brute force and with the usearch int8 path).

Measured with DEFAULT_THRESHOLD = 0.87 and the recipe (content words, raw text, question frame,
word order: recipe.py): paraphrase hit rate 0.667 (112/168 lookups) per pair and all-stored;
hard-negative false hits 0 (at 0.86 the usearch int8 path lets one two-word rewrite through).
Before the recipe (content words alone) the same threshold served 0.821, and collapsed short
questions ("What is love?" / "Do you love me?") at 1.0000: the recipe buys that back with
recall on paraphrases that change the question's form ("What is the speed of light?" / "How
fast does light travel?"). The gateway no longer runs on a fixed threshold by default: it
learns one per model for its max_error_rate (test_semantic_evidence.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tollway.cache.semantic import (
    DEFAULT_THRESHOLD,
    PartitionedIndex,
    SemanticMatcher,
    WordLlamaEmbedder,
    near_miss,
)
from tollway.cache.semantic.recipe import Recipe

DATA = json.loads((Path(__file__).parent / "data" / "semantic_pairs.json").read_text())
PARAPHRASES: list[list[str]] = DATA["paraphrases"]
HARD_NEGATIVES: list[list[str]] = DATA["hard_negatives"]
KNOWN_LIMITS: list[list[str]] = DATA["known_limits"]
CROSS_EQUIVALENTS = {tuple(pair) for pair in DATA["cross_equivalents"]}

# Measured 0.667 (per pair) and 0.667 (all stored) at 0.87; floors sit one pair below.
PER_PAIR_FLOOR = 0.66
ALL_STORED_FLOOR = 0.65


@pytest.fixture(scope="module")
def embedder() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


def _directions(a: str, b: str) -> Iterator[tuple[str, str]]:
    yield a, b
    yield b, a


def test_data_set_is_large_enough() -> None:
    assert len(PARAPHRASES) >= 60
    assert len(HARD_NEGATIVES) >= 60
    categories = {category for category, _, _ in HARD_NEGATIVES}
    assert {
        "negation",
        "number",
        "unit",
        "date",
        "entity",
        "language",
        "quote",
        "code",
    } <= categories


def test_default_threshold_is_the_measured_one() -> None:
    assert DEFAULT_THRESHOLD == 0.87


def test_per_pair_partitions(embedder: WordLlamaEmbedder) -> None:
    matcher = SemanticMatcher(embedder)
    hits = lookups = 0
    for i, (a, b) in enumerate(PARAPHRASES):
        for j, (stored, query) in enumerate(_directions(a, b)):
            matcher.add(("para", i, j), 1, stored)
            hits += matcher.lookup(("para", i, j), query, {1: stored}.get) is not None
            lookups += 1
    false_hits = []
    for i, (category, a, b) in enumerate(HARD_NEGATIVES):
        for j, (stored, query) in enumerate(_directions(a, b)):
            matcher.add(("neg", i, j), 1, stored)
            found = matcher.lookup(("neg", i, j), query, {1: stored}.get)
            if found is not None:
                false_hits.append((category, query, stored, round(found[1], 3)))
    rate = hits / lookups
    print(f"\nper-pair: paraphrase hit rate {rate:.3f} ({hits}/{lookups}), "
          f"hard-negative false hits {len(false_hits)}/{2 * len(HARD_NEGATIVES)}")  # fmt: skip
    assert false_hits == []
    assert rate >= PER_PAIR_FLOOR


@pytest.mark.parametrize("brute_force_max", [256, 16], ids=["brute-force", "usearch-i8"])
def test_all_rows_in_one_partition(embedder: WordLlamaEmbedder, brute_force_max: int) -> None:
    index = PartitionedIndex(Recipe().dim(embedder.dim), brute_force_max=brute_force_max)
    matcher = SemanticMatcher(embedder, index=index)
    keys: dict[str, int] = {}
    for text in [a for a, _ in PARAPHRASES] + [a for _, a, _ in HARD_NEGATIVES]:
        if text not in keys:
            keys[text] = len(keys)
            matcher.add("all", keys[text], text)
    texts = {key: text for text, key in keys.items()}
    assert index.partition_size("all") == len(keys)

    hits, wrong = 0, []
    for a, b in PARAPHRASES:
        found = matcher.lookup("all", b, texts.get)
        if found is None:
            continue
        if found[0] == keys[a] or (b, texts[found[0]]) in CROSS_EQUIVALENTS:
            hits += 1  # equal-scoring equivalents tie; either is a right answer
        else:
            wrong.append((b, texts[found[0]]))
    false_hits = []
    for category, _, b in HARD_NEGATIVES:
        if b in keys:  # stored itself (a first side elsewhere)
            continue
        found = matcher.lookup("all", b, texts.get)
        if found is not None and (b, texts[found[0]]) not in CROSS_EQUIVALENTS:
            false_hits.append((category, b, texts[found[0]], round(found[1], 3)))
    rate = hits / len(PARAPHRASES)
    print(f"\nall stored ({brute_force_max=}): paraphrase hit rate {rate:.3f}, "
          f"wrong hits {len(wrong)}, hard-negative false hits {len(false_hits)}")  # fmt: skip
    assert wrong == []
    assert false_hits == []
    assert rate >= ALL_STORED_FLOOR


def test_unrelated_questions_never_match(embedder: WordLlamaEmbedder) -> None:
    matcher = SemanticMatcher(embedder)
    firsts = [a for a, _ in PARAPHRASES]
    for key, text in enumerate(firsts):
        matcher.add("unrelated", key, text)
    texts = dict(enumerate(firsts))
    for i, (_, b) in enumerate(PARAPHRASES):
        found = matcher.lookup("unrelated", b, texts.get)
        assert found is None or found[0] == i or (b, texts[found[0]]) in CROSS_EQUIVALENTS


@pytest.mark.parametrize(("category", "a", "b"), KNOWN_LIMITS, ids=[c for c, _, _ in KNOWN_LIMITS])
def test_known_blind_spots_still_pass_the_guards(category: str, a: str, b: str) -> None:
    """Documents what the guards cannot see (word order among lower-case words, negation
    scope, qualifiers after the noun). If a guard learns one, move it to hard_negatives."""
    assert near_miss(a, b) is None
