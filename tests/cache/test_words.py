"""The word memo gives exactly the ids the tokenizer gives the whole text."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tollway.cache.semantic.embedder import _load_wordllama
from tollway.cache.semantic.words import WordIds

DATA = Path(__file__).parent / "data" / "semantic_pairs.json"
BENCH = Path(__file__).parents[2] / "bench"


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return _load_wordllama(256).tokenizer


def corpus() -> list[str]:
    data = json.loads(DATA.read_text())
    texts = [t for pair in data["paraphrases"] for t in pair]
    for key in ("hard_negatives", "known_limits"):
        texts += [t for row in data[key] for t in row[1:]]
    sys.path.insert(0, str(BENCH))
    try:
        from conversation import body_template
    finally:
        sys.path.remove(str(BENCH))
    import orjson
    prefix, suffix = body_template(False)
    body = orjson.loads(prefix + b"7" + suffix)
    for m in body["messages"]:
        if isinstance(m.get("content"), str):
            texts.append(m["content"])
    return texts


def test_the_memo_is_on_for_the_shipped_tokenizer(tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert WordIds.for_tokenizer(tokenizer) is not None


def test_public_text_tokenises_the_same(tokenizer) -> None:  # type: ignore[no-untyped-def]
    words = WordIds(tokenizer, size=64)  # small: generations turn over during the test
    texts = corpus()
    assert len(texts) > 300
    for _ in range(2):  # cold, then from the memo
        for text in texts:
            assert words.ids(text) == tokenizer.encode(text, add_special_tokens=False).ids


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(" \t\n\u2581ab.,'-_/`1é你🙂"))
               | st.characters(blacklist_categories=("Cs",)), max_size=60))
@example("hi ")
@example("hi   ")
@example("   ")
@example(" \u2581x")
@example("x \u2581\u2581y  ")
def test_any_string_tokenises_the_same(tokenizer, text: str) -> None:  # type: ignore[no-untyped-def]
    words = WordIds(tokenizer, size=8)
    expected = tokenizer.encode(text, add_special_tokens=False).ids
    assert words.ids(text) == expected
    assert words.ids(text) == expected  # memoised


def test_a_tokenizer_of_another_shape_is_refused() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    other = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "a b": 2}, merges=[]))
    other.pre_tokenizer = pre_tokenizers.Whitespace()
    assert WordIds.for_tokenizer(other) is None


def test_the_memo_stays_bounded(tokenizer) -> None:  # type: ignore[no-untyped-def]
    words = WordIds(tokenizer, size=10)
    words.ids(" ".join(f"w{i}" for i in range(1000)))
    assert len(words._new) <= 10 and len(words._old) <= 10
