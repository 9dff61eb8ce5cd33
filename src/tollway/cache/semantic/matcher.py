"""Semantic lookup: cosine over the last user turn within a partition, then near-miss guards.

The gateway computes the partition (scope, model, system prompt, earlier turns, tools,
parameters), so within one every request differs only in its last user turn: that is all that
gets embedded and compared. Cosine alone can't tell "enable" from "disable" or 3 from 10, so a
candidate over the threshold is served only if ``near_miss`` finds no exact detail that differs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np
import numpy.typing as npt

from .embedder import Embedder
from .features import features
from .guards import near_miss
from .index import PartitionedIndex
from .recipe import Recipe

__all__ = ["DEFAULT_THRESHOLD", "SemanticMatcher"]

# The fixed threshold (cache.semantic.threshold, the old way; the gateway learns its own by
# default). Measured on tests/cache/data/semantic_pairs.json with WordLlama 256-d, the recipe
# (recipe.py) and the guards (tests/cache/test_semantic_eval.py): no hard negative hits at
# >= 0.86 (0.87 with content words alone, which collapsed short questions into one bag).
DEFAULT_THRESHOLD = 0.87

Vector = npt.NDArray[np.float32]
RejectHook = Callable[[int, float, str], None]


class SemanticMatcher:
    """Embed, search one partition, and return the best candidate that passes the guards.

    Stateless apart from the vector index: the texts stay wherever the cache keeps its entries
    and are read back through ``texts_of``. Safe to call from several executor threads.
    """

    def __init__(
        self,
        embedder: Embedder,
        threshold: float = DEFAULT_THRESHOLD,
        *,
        index: PartitionedIndex | None = None,
        max_vectors: int = 100_000,
        candidates: int = 5,
        recipe: Recipe | None = None,
        content_only: bool = True,
        guards: bool = True,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        self.embedder = embedder
        self.threshold = threshold
        self.candidates = candidates
        self.guards = guards  # the near-miss guards (guards.py) refuse candidates first
        # How a text becomes a vector (recipe.py); None: the embedder's own, of the raw text
        # (a model embedder, which reads question words and order by itself).
        self.recipe = (recipe or Recipe()) if content_only else None
        dim = self.recipe.dim(embedder.dim) if self.recipe else embedder.dim
        if index is None:
            index = PartitionedIndex(dim, max_vectors=max_vectors)
        self.index = index
        if self.index.dim != dim:
            raise ValueError(f"index has {self.index.dim} dims, the vectors {dim}")

    @property
    def model(self) -> str:
        """Embedding model, version and text preparation; vectors made under different names
        must never be compared (store it with shared or persisted vectors)."""
        return f"{self.embedder.name}+{self.recipe.name}" if self.recipe else self.embedder.name

    def embed(self, text: str) -> Vector:
        """One unit vector for ``text``; embed once and pass it to both ``lookup`` and ``add``."""
        vector: Vector = self.embed_many([text])[0]
        return vector

    def embed_many(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """``embed`` for several texts in one call (one row each)."""
        if self.recipe is not None:
            return self.recipe.vectors(self.embedder, texts)
        rows: npt.NDArray[np.float32] = self.embedder.embed(texts)
        return rows

    def lookup(
        self,
        partition: Hashable,
        text: str,
        texts_of: Callable[[int], str | None],
        *,
        vector: Vector | None = None,
        on_reject: RejectHook | None = None,
    ) -> tuple[int, float] | None:
        """``(key, cosine)`` of the most similar stored entry that may answer ``text``, or None.

        Candidates at or over the threshold are tried best first; ``texts_of(key)`` returns the
        stored text (None if the entry is gone, which also drops its vector). ``on_reject`` is
        told ``(key, cosine, reason)`` for each candidate a guard refused, for metrics and logs.
        """
        if vector is None:
            vector = self.embed(text)
        for key, score in self.index.search(partition, vector, self.candidates):
            if score < self.threshold:
                break
            stored = texts_of(key)
            if stored is None:
                self.index.remove(partition, key)
                continue
            reason = near_miss(text, stored) if self.guards else None
            if reason is None:
                return key, score
            if on_reject is not None:
                on_reject(key, score, reason)
        return None

    def add(
        self, partition: Hashable, key: int, text: str, vector: Vector | None = None
    ) -> list[tuple[Hashable, int]]:
        """Index ``text`` under ``key``; returns the ``(partition, key)`` entries evicted.

        A text with no tokens (the empty string) embeds to zero and is not indexed.
        """
        if vector is None:
            vector = self.embed(text)
        if not np.any(vector):
            return []
        features(text)  # warm the guard cache: this text will be a candidate soon
        return self.index.add(partition, key, vector)

    def remove(self, partition: Hashable, key: int) -> bool:
        return self.index.remove(partition, key)

    def drop(self, partition: Hashable) -> int:
        return self.index.drop(partition)
