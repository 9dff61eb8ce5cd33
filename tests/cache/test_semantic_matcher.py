"""SemanticMatcher wiring, with the model-free hashing embedder (fast and deterministic)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tollway.cache.semantic import (
    DEFAULT_THRESHOLD,
    HashingEmbedder,
    PartitionedIndex,
    SemanticMatcher,
)
from tollway.cache.semantic.recipe import Recipe


@pytest.fixture
def matcher() -> SemanticMatcher:
    # Hashed n-grams only see spelling, so paraphrases score low: a low threshold stands in.
    return SemanticMatcher(HashingEmbedder(), threshold=0.5)


def test_hit_miss_and_guard_rejection(matcher: SemanticMatcher) -> None:
    texts = {1: "How do I enable two-factor authentication on my account?"}
    matcher.add("p", 1, texts[1])
    hit = matcher.lookup(
        "p", "How can I enable two-factor authentication on my account?", texts.get
    )
    assert hit is not None and hit[0] == 1 and hit[1] >= 0.5
    rejected: list[tuple[int, float, str]] = []
    query = "How do I disable two-factor authentication on my account?"
    assert matcher.lookup("p", query, texts.get, on_reject=lambda *r: rejected.append(r)) is None
    assert [(key, reason) for key, _, reason in rejected] == [(1, "antonym: enable/disable")]
    assert matcher.lookup("other-partition", texts[1], texts.get) is None
    assert matcher.lookup("p", "Tell me a joke about cats", texts.get) is None


def test_falls_through_to_the_next_candidate_that_passes(matcher: SemanticMatcher) -> None:
    texts = {
        1: "Summarise this report in 10 sentences for the board",
        2: "Summarise this report in three sentences for the board",
    }
    for key, text in texts.items():
        matcher.add("p", key, text)
    query = "Summarise this report in 3 sentences for the board"
    scores = dict(matcher.index.search("p", matcher.embed(query), k=2))
    assert scores[1] > scores[2]  # the lexically closer entry is the wrong one
    hit = matcher.lookup("p", query, texts.get)
    assert hit is not None and hit[0] == 2


def test_gone_entries_are_dropped_from_the_index(matcher: SemanticMatcher) -> None:
    matcher.add("p", 1, "What is the refund policy?")
    assert matcher.lookup("p", "What is the refund policy?", lambda key: None) is None
    assert matcher.index.size == 0


def test_embed_once_and_pass_the_vector(matcher: SemanticMatcher) -> None:
    text = "Where can I find my invoices?"
    vector = matcher.embed(text)
    assert vector.shape == (matcher.index.dim,) and np.isclose(np.linalg.norm(vector), 1.0)
    matcher.add("p", 9, text, vector=vector)
    assert matcher.lookup("p", text, {9: text}.get, vector=vector) == (9, pytest.approx(1.0))


def test_texts_without_tokens_are_not_indexed(matcher: SemanticMatcher) -> None:
    assert matcher.add("p", 1, "") == [] and matcher.add("p", 2, "   ") == []
    assert matcher.index.size == 0
    assert matcher.lookup("p", "", {}.get) is None


def test_add_reports_evictions_and_remove_drop() -> None:
    matcher = SemanticMatcher(HashingEmbedder(), max_vectors=2)
    assert matcher.add("a", 1, "one") == []
    assert matcher.add("b", 2, "two") == []
    assert matcher.add("a", 3, "three") == [("a", 1)]
    assert matcher.remove("a", 3) and matcher.drop("b") == 1 and matcher.index.size == 0


def test_configuration_checks() -> None:
    embedder = HashingEmbedder()
    assert SemanticMatcher(embedder).threshold == DEFAULT_THRESHOLD
    assert SemanticMatcher(embedder).model == f"{embedder.name}+{Recipe().name}"
    assert SemanticMatcher(embedder, content_only=False).model == embedder.name
    with pytest.raises(ValueError):
        SemanticMatcher(embedder, threshold=0)
    with pytest.raises(ValueError):
        SemanticMatcher(embedder, index=PartitionedIndex(16))
    shared = PartitionedIndex(Recipe().dim(embedder.dim))
    assert SemanticMatcher(embedder, index=shared).index is shared  # even while empty


def test_concurrent_lookups_and_adds() -> None:
    matcher = SemanticMatcher(HashingEmbedder(dim=1024), threshold=0.5)
    texts = {key: f"Question {key}: how do I configure service number {key}?" for key in range(400)}

    def work(key: int) -> bool:
        partition = key % 4
        matcher.add(partition, key, texts[key])
        hit = matcher.lookup(partition, texts[key], texts.get)
        return hit is not None and hit[0] == key

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(work, texts))
    assert matcher.index.size == 400
