"""Embedders: shape, unit norm, determinism, thread safety, and the hashing embedder's stability."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tollway.cache.semantic import Embedder, HashingEmbedder, WordLlamaEmbedder

TEXTS = [
    "How do I reset my password?",
    "What's the way to reset my password?",
    "What is the capital of France?",
    "",
    "word " * 5000,  # longer than one gather chunk
    "Ünïcödé, 你好, emoji 🙂",
]


def test_wordllama_embeds_unit_rows_offline() -> None:
    embedder = WordLlamaEmbedder()
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 256 and embedder.name.startswith("wordllama-0.4")
    out = embedder.embed(TEXTS)
    assert out.shape == (len(TEXTS), 256) and out.dtype == np.float32
    norms = np.linalg.norm(out, axis=1)
    assert np.allclose(norms[[0, 1, 2, 4, 5]], 1.0, atol=1e-5)
    assert norms[3] == 0.0  # no tokens: matches nothing
    assert float(out[0] @ out[1]) > 0.9 > 0.3 > float(out[0] @ out[2])


def test_wordllama_matches_the_library_and_batches_match_singles() -> None:
    from pathlib import Path

    import wordllama

    embedder = WordLlamaEmbedder()
    batch = embedder.embed(TEXTS[:3])
    singles = np.vstack([embedder.embed([text]) for text in TEXTS[:3]])
    assert np.allclose(batch, singles, atol=1e-6)
    reference = wordllama.WordLlama.load(
        cache_dir=Path(wordllama.__file__).parent, disable_download=True, dim=256
    ).embed(TEXTS[:3], norm=True)
    assert np.allclose(batch, reference, atol=1e-5)


def test_wordllama_is_thread_safe() -> None:
    embedder = WordLlamaEmbedder()
    texts = [f"question number {i} about {topic}" for i in range(50) for topic in ("a", "b")]
    serial = embedder.embed(texts)
    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(pool.map(lambda text: embedder.embed([text])[0], texts))
    assert np.allclose(np.vstack(rows), serial, atol=1e-6)


def test_hashing_embedder_is_stable_and_normalised() -> None:
    embedder = HashingEmbedder()
    assert isinstance(embedder, Embedder) and embedder.dim == 4096
    out = embedder.embed(TEXTS)
    assert out.shape == (len(TEXTS), 4096) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out[[0, 1, 2, 4, 5]], axis=1), 1.0, atol=1e-5)
    assert not out[3].any()
    # Pinned: the hash must not change across processes, platforms or releases.
    buckets = np.flatnonzero(out[0])
    signs = np.sign(out[0][buckets]).astype("<i1")
    digest = hashlib.sha256(buckets.astype("<i8").tobytes() + signs.tobytes()).hexdigest()
    assert digest[:16] == PINNED_DIGEST
    assert float(out[0] @ out[1]) > float(out[0] @ out[2])
    assert np.array_equal(
        embedder.embed(["Reset  my\tPASSWORD"]), embedder.embed(["reset my password"])
    )


PINNED_DIGEST = "e308df15fa88b2c8"


def test_wordllama_loads_once_under_concurrent_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from tollway.cache.semantic import embedder as module

    monkeypatch.setattr(module, "_MODELS", {})
    loads: list[int] = []
    real = module._import_wordllama

    def counting_import() -> object:
        loads.append(1)
        return real()

    monkeypatch.setattr(module, "_import_wordllama", counting_import)
    embedder = WordLlamaEmbedder()
    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(pool.map(lambda _: embedder.embed(["same text"])[0], range(16)))
    assert len(loads) == 1
    assert all(np.array_equal(row, rows[0]) for row in rows)
